package broker

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
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
