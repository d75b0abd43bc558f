package controllers

import (
	"strings"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// waitReconciles waits until the fluxjob controller has finished at least
// n reconciles more than before (controller_runtime_reconcile_total, see
// reconcileCount). A test that asserts "nothing was written" waits on this
// instead of sleeping: once a reconcile of the object has run to its end,
// any write it was going to make has been made.
func (h *harness) waitReconciles(before float64, n int, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		now, _ := reconcileCount(h.t)
		if now-before >= float64(n) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the controller finished %.0f reconciles in %s, want at least %d", now-before, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartAndSettle restarts the manager and waits until the new one has
// reconciled at least n objects: every FluxJob of the harness's namespace
// is reconciled once from the informer's initial list.
func (h *harness) restartAndSettle(n int) {
	h.t.Helper()
	h.stop()
	before, _ := reconcileCount(h.t)
	h.start()
	h.waitReconciles(before, n, 30*time.Second)
}

// waitBrokerFinished waits until the broker's eventlogs show a finish
// event for at least n of the named FluxJobs' Flux jobs (their job IDs as
// the status has them).
func (h *harness) waitBrokerFinished(names []string, n int, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		finished := 0
		for _, name := range names {
			obj, err := h.get(name)
			if err != nil || obj.Status.JobID == 0 {
				continue
			}
			if log, ok := h.broker.Eventlog(job.ID(obj.Status.JobID)); ok && strings.Contains(log, `"name":"finish"`) {
				finished++
			}
		}
		if finished >= n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d of the Flux jobs of %v finished in the broker within %s, want %d", finished, names, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
