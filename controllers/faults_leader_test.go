package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// electedManager is one replica of the manager with leader election on,
// as main.go runs it with --leader-elect, in this process.
type electedManager struct {
	id     string
	cancel context.CancelFunc
	done   chan error
	conn   *broker.Connector
}

// waitConnected waits until the replica's connector has a broker
// connection: the manager runs (the connector does not wait for the lease).
func (m *electedManager) waitConnected(t *testing.T) {
	t.Helper()
	waitConnected(t, m.conn)
}

const testLeaseName = "fluxjob-operator.fluxjob.io"

// startElected starts a replica that competes for the lease in the
// harness's namespace. Short lease timings keep the test fast. The lease
// is not released on stop: stopping a replica looks to the others like a
// crash (they wait for the lease to expire), which is what a SIGKILL does.
func (h *harness) startElected(id string) *electedManager {
	h.t.Helper()
	mgr, err := ctrl.NewManager(h.cfg, electedOptions(h.ns, false))
	if err != nil {
		h.t.Fatal(err)
	}
	conn := broker.NewConnector(testConnectorOptions(h.broker.URI()))
	if err := mgr.Add(conn); err != nil {
		h.t.Fatal(err)
	}
	r := &FluxJobReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorder("fluxjob-controller"),
		Flux: conn, Options: h.opts}
	if err := r.SetupWithManager(mgr); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &electedManager{id: id, cancel: cancel, done: make(chan error, 1), conn: conn}
	go func() { m.done <- mgr.Start(ctx) }()
	h.t.Cleanup(func() { m.stop(h.t) })
	return m
}

// electedOptions are the options of a test manager that competes for the
// lease in namespace ns, with short lease timings to keep tests fast.
func electedOptions(ns string, releaseOnCancel bool) ctrl.Options {
	lease, renew, retry := 3*time.Second, 2*time.Second, 250*time.Millisecond
	return ctrl.Options{
		Scheme:                        testScheme(),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		Cache:                         cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller:                    config.Controller{SkipNameValidation: ptrTo(true)},
		LeaderElection:                true,
		LeaderElectionID:              testLeaseName,
		LeaderElectionNamespace:       ns,
		LeaderElectionReleaseOnCancel: releaseOnCancel,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
	}
}

func (m *electedManager) stop(t *testing.T) {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("manager %s: %v", m.id, err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("manager %s did not stop within 60s", m.id)
	}
}

// leaseHolder returns the lease's holder, "" if none.
func (h *harness) leaseHolder() string {
	var l coordinationv1.Lease
	if err := h.c.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: testLeaseName}, &l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (h *harness) waitNewHolder(old string, timeout time.Duration) string {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if id := h.leaseHolder(); id != "" && id != old {
			return id
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("no new lease holder within %s (holder %q)", timeout, h.leaseHolder())
	return ""
}

// TestFaultLeaderHandover runs two replicas with leader election against
// one API server and broker, stops the leader without releasing the lease
// (as a crash would) while FluxJobs flow, and checks that the other takes
// over and that no job is submitted twice: one Flux job per FluxJob, each
// FluxJob's status its Flux job's. (A process-level version, two manager
// binaries with --leader-elect, needs a way to name the lease's namespace
// outside a cluster, which main.go does not offer yet.)
func TestFaultLeaderHandover(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays(), Cores: 16}, Options{AdoptWindow: 5 * time.Second})
	h.broker.SetResponseDelay(2 * time.Millisecond)
	a := h.startElected("a")
	first := h.waitNewHolder("", 30*time.Second)
	b := h.startElected("b")
	var names []string
	create := func(n int) {
		for range n {
			name := fmt.Sprintf("job-%02d", len(names))
			h.create(name, cmdSpec(soakCmd(len(names))...))
			names = append(names, name)
			time.Sleep(20 * time.Millisecond)
		}
	}
	create(12)
	a.stop(t) // the leader goes away holding the lease
	create(8) // nobody leads for a while
	second := h.waitNewHolder(first, 30*time.Second)
	t.Logf("lease: %s -> %s", first, second)
	create(8)
	// And back: a fresh replica takes over from the second leader.
	c := h.startElected("c")
	c.waitConnected(t) // up (its connector runs without the lease) before the leader goes
	b.stop(t)
	third := h.waitNewHolder(second, 30*time.Second)
	t.Logf("lease: %s -> %s", second, third)
	create(6)
	h.waitAll(names, 90*time.Second, "a final phase", terminal)
	h.checkMatchesBroker(names)
}

// soakCmd is the i-th of a mix of commands that succeed, fail and run a
// while (with the broker's TimeScale 0.01).
func soakCmd(i int) []string {
	cmds := [][]string{{"true"}, {"false"}, {"exit", "3"}, {"sleep", "30"}, {"sleep", "120"}}
	return cmds[i%len(cmds)]
}
