package broker

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// TestRouteFor: the first account whose selector selects the namespace
// is its route; an unmapped namespace is refused (NoAccount) unless the
// policy sends it to the endpoint's own connection; a selector or policy
// change keeps the connectors (no reconnection) and routes anew.
func TestRouteFor(t *testing.T) {
	sel := func(s string) labels.Selector {
		l, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	reg := NewRegistry(ConnectorOptions{})
	cfg := Config{URI: "ssh://bot@h/s", Selector: labels.Everything(), Accounts: []AccountConfig{
		{Name: "chem", Selector: sel("dept=chem"), URI: "ssh://chem@h/s", MungeSocket: "/m"},
		{Name: "all-students", Selector: sel("role=student"), URI: "ssh://stud@h/s", MungeSocket: "/m"},
	}}
	if !reg.Set("hpc", cfg) {
		t.Fatal("no connector started")
	}
	for _, tc := range []struct {
		labels     labels.Set
		account    string
		refused    bool
		unmappedOK bool
	}{
		{labels.Set{"dept": "chem", "role": "student"}, "chem", false, false}, // the first that selects
		{labels.Set{"role": "student"}, "all-students", false, false},
		{labels.Set{"dept": "bio"}, "", true, false},
	} {
		rt, refusal := reg.RouteFor("hpc", "ns", tc.labels)
		if rt.Account != tc.account || (refusal != nil) != tc.refused || rt.Name != "hpc" {
			t.Errorf("%v: route %+v refusal %+v, want account %q refused %v", tc.labels, rt, refusal, tc.account, tc.refused)
		}
		if refusal != nil && refusal.Reason != fluxjobv1.ReasonNoAccount {
			t.Errorf("refusal reason %q", refusal.Reason)
		}
		if _, _, err := rt.Get(); refusal != nil && err == nil {
			t.Errorf("%v: a refused route is usable", tc.labels)
		}
	}
	conn, _, _ := reg.Lookup("hpc")
	cfg.Unmapped = fluxjobv1.UnmappedEndpointConnection
	cfg.Accounts = append([]AccountConfig(nil), cfg.Accounts...)
	cfg.Accounts[0].Selector = sel("dept in (chem,bio)")
	if reg.Set("hpc", cfg) {
		t.Fatal("a mapping change made new connections")
	}
	if c, _, _ := reg.Lookup("hpc"); c != conn {
		t.Fatal("the endpoint's connector was replaced")
	}
	if rt, refusal := reg.RouteFor("hpc", "ns", labels.Set{"dept": "bio"}); rt.Account != "chem" || refusal != nil {
		t.Errorf("after the selector change: %+v %+v", rt, refusal)
	}
	if rt, refusal := reg.RouteFor("hpc", "ns", labels.Set{"dept": "phys"}); rt.Account != "" || refusal != nil || rt.conn != conn {
		t.Errorf("unmapped with EndpointConnection: %+v %+v", rt, refusal)
	}
	// No accounts: the endpoint's own connection for everyone.
	reg.Set("plain", Config{URI: "local:///s", Selector: labels.Everything()})
	if rt, refusal := reg.RouteFor("plain", "ns", nil); rt.Account != "" || refusal != nil || rt.conn == nil {
		t.Errorf("plain: %+v %+v", rt, refusal)
	}
	if reg.HasAccounts("plain") || !reg.HasAccounts("hpc") {
		t.Error("HasAccounts")
	}
}

func TestAccountURI(t *testing.T) {
	for _, tc := range []struct{ in, user, want string }{
		{"ssh://bot@login.example.org:2222/run/flux/local", "chem", "ssh://chem@login.example.org:2222/run/flux/local"},
		{"ssh://login.example.org/run/flux/local", "chem", "ssh://chem@login.example.org/run/flux/local"},
		{"ssh://bot@login.example.org/run/flux/local", "", "ssh://bot@login.example.org/run/flux/local"},
	} {
		got, err := accountURI(tc.in, tc.user)
		if err != nil || got != tc.want {
			t.Errorf("accountURI(%q, %q) = %q, %v; want %q", tc.in, tc.user, got, err, tc.want)
		}
	}
	if _, err := accountURI("local:///run/flux/local", "x"); err == nil {
		t.Error("a local:// URI got accounts")
	}
}

// TestCurveCertFromSecret: a curve account's Secret must hold both
// certificate files, and the certificate the uid it was issued for.
func TestCurveCertFromSecret(t *testing.T) {
	issued, _ := sign.NewCert()
	issued.SetMeta("userid", sign.KindInt64, "1234")
	bare, _ := sign.NewCert()
	other, _ := sign.NewCert()
	sec := func(pub, key []byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"},
			Data: map[string][]byte{fluxjobv1.CurveCertKey: pub, fluxjobv1.CurveKeyKey: key}}
	}
	if c, err := curveCert(sec(issued.MarshalPublic(), issued.MarshalSecret())); err != nil || c == nil {
		t.Fatalf("issued certificate: %v", err)
	}
	for _, tc := range []struct {
		name     string
		pub, key []byte
		want     string
	}{
		{"missing key", issued.MarshalPublic(), nil, "must have non-empty keys"},
		{"no userid", bare.MarshalPublic(), bare.MarshalSecret(), "no \"userid\""},
		{"another's secret key", issued.MarshalPublic(), other.MarshalSecret(), "not the public certificate's"},
	} {
		if _, err := curveCert(sec(tc.pub, tc.key)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
