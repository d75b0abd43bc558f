package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// leaseName is the Lease the manager replicas compete for (main.go's
// leaderElectionID).
const leaseName = "fluxjob-operator.fluxjob.io"

// leaseHolder returns the Lease's holder identity, "" if none.
func (w *procWorld) leaseHolder() string {
	var l coordinationv1.Lease
	if err := w.k.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: leaseName}, &l); err != nil {
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// waitHolder waits until the Lease is held by someone other than not.
func (w *procWorld) waitHolder(not string, timeout time.Duration) string {
	w.t.Helper()
	end := time.Now().Add(timeout)
	for {
		if h := w.leaseHolder(); h != "" && h != not {
			return h
		}
		if time.Now().After(end) {
			w.t.Fatalf("no new leader within %s (holder %q)\n%s", timeout, w.leaseHolder(), tail(w.output(), 8000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLeaderHandover runs two managers with --leader-elect against one
// API server and one broker. The standby must not submit anything; when
// the leader is SIGKILLed while FluxJobs flow, the standby takes over;
// then the new leader is stopped gracefully (the lease is released) and a
// restarted first manager takes over again. No job may be submitted
// twice, and every FluxJob must end as its Flux job did.
func TestLeaderHandover(t *testing.T) {
	const ns = "leader"
	w := newProcWorld(t, 8*time.Minute, testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays(), Cores: 16}, ns)
	w.broker.SetResponseDelay(2 * time.Millisecond)
	elect := []string{"--leader-elect", "--leader-election-namespace=" + ns}
	secret := "fj-leader-secret-" + fmt.Sprint(time.Now().UnixNano())

	a, readyA := w.startManager(elect...)
	// Ready (connected to the broker) means it runs; one that exits at
	// once (leader election cannot run outside a cluster without a
	// namespace flag) fails here.
	if err := waitReady(w.ctx, readyA, a); err != nil {
		t.Fatalf("a manager with %v did not become ready: %v\n%s", elect, err, tail(a.Output(), 4000))
	}
	holderA := w.waitHolder("", 60*time.Second)
	b, _ := w.startManager(elect...)
	created := 0
	create := func(n int) {
		t.Helper()
		for range n {
			if err := w.createJob(fmt.Sprintf("job-%03d", created), created, secret); err != nil {
				t.Fatal(err)
			}
			created++
			time.Sleep(40 * time.Millisecond)
		}
	}
	create(15)
	if n := strings.Count(b.Output(), "submitted to Flux"); n != 0 {
		t.Fatalf("the standby manager submitted %d jobs while the other held the lease", n)
	}
	// SIGKILL the leader mid-flow: it cannot release the lease; the
	// standby takes over once the lease expires.
	a.Kill()
	create(10) // created while nobody leads
	holderB := w.waitHolder(holderA, 60*time.Second)
	t.Logf("leader %s killed; %s took over", holderA, holderB)
	create(10)

	// A graceful handover: start the first manager again as standby, stop
	// the leader with SIGTERM (it releases the lease).
	a2, readyA2 := w.startManager(elect...)
	// Up and campaigning (readiness does not depend on the lease) before
	// the leader goes.
	if err := waitReady(w.ctx, readyA2, a2); err != nil {
		t.Fatalf("the restarted manager did not become ready: %v\n%s", err, tail(a2.Output(), 4000))
	}
	create(5)
	if err := b.Stop(30 * time.Second); err != nil {
		t.Errorf("the leader did not exit cleanly on SIGTERM: %v\n%s", err, tail(b.Output(), 4000))
	}
	holderA2 := w.waitHolder(holderB, 60*time.Second)
	t.Logf("leader %s stopped; %s took over", holderB, holderA2)
	create(10)

	w.waitSettled(created, 3*time.Minute)
	v := w.judge()
	t.Logf("leader handover: %s", v)
	for _, p := range v.problems {
		t.Error(p)
	}
	if v.duplicates != 0 || v.missing != 0 || v.orphans != 0 || v.mismatched != 0 || v.brokerJobs != created {
		t.Errorf("the broker and the FluxJobs disagree: %s", v)
	}
	w.checkNoSecrets(secret)
	if err := a2.Stop(30 * time.Second); err != nil {
		t.Errorf("the last manager did not exit cleanly on SIGTERM: %v", err)
	}
}
