package controllers

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

func startTestBroker(t *testing.T) *testbroker.Server {
	t.Helper()
	b := testbroker.New(testbroker.Options{})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// runRegistry starts reg and stops it (waiting for its connectors) when
// the test ends.
func runRegistry(t *testing.T, reg *broker.Registry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	})
}

func fastConnectorOptions() broker.ConnectorOptions {
	return broker.ConnectorOptions{
		Backoff:       wait.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 200 * time.Millisecond},
		CheckInterval: 20 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond,
	}
}

// changeLog records the registry's change notifications.
type changeLog struct {
	mu    sync.Mutex
	names []string
}

func (c *changeLog) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = append(c.names, name)
}

func (c *changeLog) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, x := range c.names {
		if x == name {
			n++
		}
	}
	return n
}

// TestInstanceRegistryLifecycle: an instance registered before Start
// connects once the registry runs; the same settings again keep the
// connector (and say nothing); new settings replace it (the old one is
// stopped and reports why); Remove stops it; each change is announced.
func TestInstanceRegistryLifecycle(t *testing.T) {
	brokerA, brokerB := startTestBroker(t), startTestBroker(t)
	reg := broker.NewRegistry(fastConnectorOptions())
	var changes changeLog
	reg.OnChange(changes.add)
	var connects changeLog
	reg.OnConnect(connects.add)

	if !reg.Set("x", broker.Config{URI: brokerA.URI(), Workers: 1, Selector: labels.Everything()}) {
		t.Fatal("Set of a new instance did not start a connector")
	}
	connA, _, ok := reg.Lookup("x")
	if !ok || connA == nil {
		t.Fatal("x not registered")
	}
	runRegistry(t, reg)
	waitUntil(t, "x connected", func() bool { _, _, err := connA.Get(); return err == nil })
	waitUntil(t, "OnConnect(x)", func() bool { return connects.count("x") == 1 })

	before := changes.count("x")
	if reg.Set("x", broker.Config{URI: brokerA.URI(), Workers: 1, Selector: labels.Everything()}) {
		t.Fatal("Set with the same settings replaced the connector")
	}
	if c, _, _ := reg.Lookup("x"); c != connA || changes.count("x") != before {
		t.Fatalf("same settings: connector replaced %v, %d change notifications (want none)", c != connA, changes.count("x")-before)
	}
	// Only the selector changes: same connector, one notification.
	reg.Set("x", broker.Config{URI: brokerA.URI(), Workers: 1})
	if c, cfg, _ := reg.Lookup("x"); c != connA || cfg.Selector != nil || changes.count("x") != before+1 {
		t.Fatalf("selector change: connector replaced %v, selector %v, %d notifications", c != connA, cfg.Selector, changes.count("x")-before)
	}

	if !reg.Set("x", broker.Config{URI: brokerB.URI(), Workers: 1}) {
		t.Fatal("new settings did not start a new connector")
	}
	connB, _, _ := reg.Lookup("x")
	if connB == connA {
		t.Fatal("connector not replaced")
	}
	if _, _, err := connA.Get(); !errors.Is(err, broker.ErrUnreachable) {
		t.Fatalf("the replaced connector still answers: %v", err)
	}
	waitUntil(t, "x connected to B", func() bool { _, ctl, err := connB.Get(); return err == nil && ctl.URI() == brokerB.URI() })

	// Invalid settings: registered, no connector.
	reg.Set("bad", broker.Config{URI: "local:///nonexistent", Invalid: "Secret k missing"})
	if c, cfg, ok := reg.Lookup("bad"); !ok || c != nil || cfg.Invalid == "" {
		t.Fatalf("invalid instance: ok %v conn %v invalid %q", ok, c, cfg.Invalid)
	}

	reg.Remove("x")
	if _, _, ok := reg.Lookup("x"); ok {
		t.Fatal("x still registered after Remove")
	}
	if _, _, err := connB.Get(); !errors.Is(err, broker.ErrUnreachable) {
		t.Fatalf("removed connector still answers: %v", err)
	}
	if got := reg.Names(); !slices.Equal(got, []string{"bad"}) {
		t.Fatalf("Names() = %v", got)
	}
	if err := reg.Ready(nil); err != nil {
		t.Fatalf("Ready without an implicit instance: %v", err)
	}
}

func TestInstanceRegistryDefault(t *testing.T) {
	implicit := broker.NewConnector(broker.ConnectorOptions{URI: "local:///nonexistent"})
	tests := []struct {
		name       string
		implicit   bool
		defaults   []string // instances marked default
		others     []string
		want       string
		wantReason string
	}{
		{name: "nothing", wantReason: fluxjobv1.ReasonNoDefaultInstance},
		{name: "implicit only", implicit: true, others: []string{"a"}, want: "sidecar"},
		{name: "one marked wins over the implicit", implicit: true, defaults: []string{"b"}, others: []string{"a"}, want: "b"},
		{name: "one marked", defaults: []string{"b"}, want: "b"},
		{name: "two marked", implicit: true, defaults: []string{"b", "a"}, wantReason: fluxjobv1.ReasonAmbiguousDefaultInstance},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := broker.NewRegistry(broker.ConnectorOptions{})
			if tc.implicit {
				reg.SetImplicit("sidecar", implicit)
			}
			for _, n := range tc.defaults {
				reg.Set(n, broker.Config{Default: true, Invalid: "not dialled in this test"})
			}
			for _, n := range tc.others {
				reg.Set(n, broker.Config{Invalid: "not dialled in this test"})
			}
			name, reason, candidates := reg.Default()
			if name != tc.want || reason != tc.wantReason {
				t.Fatalf("Default() = %q, %q, want %q, %q", name, reason, tc.want, tc.wantReason)
			}
			if reason == fluxjobv1.ReasonAmbiguousDefaultInstance && !slices.Equal(candidates, []string{"a", "b"}) {
				t.Fatalf("candidates %v", candidates)
			}
			if tc.implicit {
				reg.Remove("sidecar")
				if _, _, ok := reg.Lookup("sidecar"); !ok {
					t.Fatal("the implicit instance was removed")
				}
			}
		})
	}
}

// TestAdmit: where a FluxJob runs and whether it may, for each way of
// naming (or not naming) its instance.
func TestAdmit(t *testing.T) {
	nsTeam := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: map[string]string{"hpc": "yes"}}}
	nsOther := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(nsTeam, nsOther).Build()
	hpc, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"hpc": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := broker.NewRegistry(broker.ConnectorOptions{})
	const off = "not dialled in this test"
	reg.Set("open", broker.Config{Selector: labels.Everything(), Default: true, Invalid: off})
	reg.Set("hpc", broker.Config{Selector: hpc, Invalid: off})
	reg.Set("closed", broker.Config{Invalid: off}) // no namespaceSelector: admits nobody
	r := &FluxJobReconciler{Client: c, Instances: reg}

	at := fluxjobv1.NewPreciseTime(time.Now())
	tests := []struct {
		name       string
		ns         string
		spec       string
		status     string
		submitted  bool // has a job ID
		marked     bool // has a marker, no job ID
		want       string
		wantOK     bool
		wantReason string
	}{
		{name: "default", ns: "other", want: "open", wantOK: true},
		{name: "spec.instance", ns: "team", spec: "hpc", want: "hpc", wantOK: true},
		{name: "selector does not match", ns: "other", spec: "hpc", want: "hpc", wantReason: fluxjobv1.ReasonNamespaceNotAdmitted},
		{name: "no selector admits nobody", ns: "team", spec: "closed", want: "closed", wantReason: fluxjobv1.ReasonNamespaceNotAdmitted},
		{name: "unknown instance", ns: "team", spec: "nope", want: "nope", wantReason: fluxjobv1.ReasonInstanceNotFound},
		{name: "status.instance wins over the default", ns: "team", status: "hpc", want: "hpc", wantOK: true},
		{name: "submitted before the selector changed", ns: "other", spec: "closed", status: "closed", submitted: true, want: "closed", wantOK: true},
		// Only a job ID keeps a FluxJob past the gates: a marker grants nothing.
		{name: "marker without a job ID", ns: "other", spec: "closed", status: "closed", marked: true, want: "closed", wantReason: fluxjobv1.ReasonNamespaceNotAdmitted},
		{name: "submitted to an instance since deleted", ns: "other", status: "gone", submitted: true, want: "gone", wantReason: fluxjobv1.ReasonInstanceNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: tc.ns, Name: "j"},
				Spec: fluxjobv1.FluxJobSpec{Instance: tc.spec}, Status: fluxjobv1.FluxJobStatus{Instance: tc.status}}
			if tc.submitted || tc.marked {
				obj.Status.SubmitAttemptTime = &at
			}
			if tc.submitted {
				obj.Status.JobID = 1
			}
			rt, adm, err := r.admit(context.Background(), obj, readMarker(obj))
			if err != nil {
				t.Fatal(err)
			}
			if adm.Instance != tc.want || adm.OK != tc.wantOK || adm.Reason != tc.wantReason || rt.Name != tc.want {
				t.Fatalf("admit = %+v (route %q), want instance %q ok %v reason %q", adm, rt.Name, tc.want, tc.wantOK, tc.wantReason)
			}
			if !adm.OK && adm.Message == "" {
				t.Fatal("a refusal without a message")
			}
			if _, _, err := rt.Get(); !errors.Is(err, broker.ErrUnreachable) {
				t.Fatalf("route to an instance without a connector: get() = %v", err)
			}
		})
	}

	// No default at all.
	r.Instances = broker.NewRegistry(broker.ConnectorOptions{})
	_, adm, _ := r.admit(context.Background(), &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "j"}}, marker{})
	if adm.OK || adm.Reason != fluxjobv1.ReasonNoDefaultInstance {
		t.Fatalf("no instance at all: %+v", adm)
	}
}

// TestSetAdmission: status.instance is recorded once admitted and never
// changed; a waiting FluxJob says why in its message and condition.
func TestSetAdmission(t *testing.T) {
	now := metav1.Now()
	tests := []struct {
		name         string
		st           fluxjobv1.FluxJobStatus
		adm          admission
		wantInstance string
		wantStatus   metav1.ConditionStatus
		wantMessage  string
	}{
		{name: "admitted records the instance", st: fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhasePending},
			adm: admission{Instance: "a", OK: true}, wantInstance: "a", wantStatus: metav1.ConditionTrue},
		{name: "recorded instance is kept", st: fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhaseRunning, Instance: "a", Message: "running"},
			adm: admission{Instance: "b", OK: true}, wantInstance: "a", wantStatus: metav1.ConditionTrue, wantMessage: "running"},
		{name: "refused while pending", st: fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhasePending, Message: "Waiting"},
			adm: admission{Instance: "b", Reason: fluxjobv1.ReasonInstanceNotFound, Message: "no b"}, wantStatus: metav1.ConditionFalse, wantMessage: "no b"},
		{name: "instance gone while running", st: fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhaseRunning, Instance: "b", Message: "running"},
			adm: admission{Instance: "b", Reason: fluxjobv1.ReasonInstanceNotFound, Message: "no b"}, wantInstance: "b", wantStatus: metav1.ConditionFalse, wantMessage: "running"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			setAdmission(&st, &tc.adm, 3, now)
			c := meta.FindStatusCondition(st.Conditions, fluxjobv1.ConditionInstanceAdmitted)
			if st.Instance != tc.wantInstance || c == nil || c.Status != tc.wantStatus || c.ObservedGeneration != 3 {
				t.Fatalf("instance %q condition %+v", st.Instance, c)
			}
			if tc.wantMessage != "" && st.Message != tc.wantMessage {
				t.Fatalf("message %q, want %q", st.Message, tc.wantMessage)
			}
		})
	}
}
