package controllers

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// statusFaults is an http.RoundTripper that fails some PATCHes of
// FluxJob status with an injected 409 Conflict or 500 Internal Error, as
// a busy or failing API server would, before they reach the API server.
type statusFaults struct {
	every     int64 // fail one status PATCH in every
	n         atomic.Int64
	conflicts atomic.Int64
	internals atomic.Int64
	passed    atomic.Int64
}

// wrap returns a RoundTripper that injects s's faults in front of next
// (rest.Config.WrapTransport; each client of the manager gets its own).
func (s *statusFaults) wrap(next http.RoundTripper) http.RoundTripper {
	return faultyTransport{s: s, next: next}
}

type faultyTransport struct {
	s    *statusFaults
	next http.RoundTripper
}

func (f faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	s := f.s
	if req.Method != http.MethodPatch || !strings.Contains(req.URL.Path, "/fluxjobs/") || !strings.HasSuffix(req.URL.Path, "/status") {
		return f.next.RoundTrip(req)
	}
	i := s.n.Add(1)
	if i%s.every != 0 {
		s.passed.Add(1)
		return f.next.RoundTrip(req)
	}
	code, reason := http.StatusConflict, "Conflict"
	if (i/s.every)%2 == 0 {
		code, reason = http.StatusInternalServerError, "InternalError"
		s.internals.Add(1)
	} else {
		s.conflicts.Add(1)
	}
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	body := fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"injected by the test: %s","reason":%q,"code":%d}`,
		strings.ToLower(reason), reason, code)
	return &http.Response{
		StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)),
		Header:        http.Header{"Content-Type": []string{"application/json"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}, nil
}

// reconcileCount sums controller_runtime_reconcile_total of the fluxjob
// controller over all results, and returns the panics counter too.
func reconcileCount(t *testing.T) (total, panics float64) {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if name != "controller_runtime_reconcile_total" && name != "controller_runtime_reconcile_panics_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			ours := false
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "fluxjob" {
					ours = true
				}
			}
			if !ours {
				continue
			}
			if name == "controller_runtime_reconcile_total" {
				total += m.GetCounter().GetValue()
			} else {
				panics += m.GetCounter().GetValue()
			}
		}
	}
	return total, panics
}

// TestFaultStatusWriteErrors runs FluxJobs while the API server refuses
// every third status PATCH (409 Conflict and 500 Internal Error in turn)
// and another writer keeps changing the objects' resourceVersion (real
// optimistic-lock conflicts). Every FluxJob must still end as its Flux
// job did with every event kept; the controller must not spin: its
// reconciles are bounded while the jobs run, and stop once they ended.
func TestFaultStatusWriteErrors(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Delays: testbroker.RealisticDelays()}, Options{})
	faults := &statusFaults{every: 3}
	h.cfg = rest.CopyConfig(h.cfg)
	h.cfg.WrapTransport = faults.wrap
	before, panicsBefore := reconcileCount(t)
	h.start()

	cmds := [][]string{{"true"}, {"false"}, {"exit", "4"}, {"sleep", "50"}, {"sleep", "120"}, {"true"}, {"kill-shell", "9"}, {"sleep", "80"}}
	var names []string
	for i, cmd := range cmds {
		name := fmt.Sprintf("w-%d", i)
		h.create(name, cmdSpec(cmd...))
		names = append(names, name)
	}
	// Another writer bumps the objects while they run.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			h.flip(names[i%len(names)], i)
		}
	}()
	h.waitAll(names, 60*time.Second, "a final phase", terminal)
	close(stop)
	wg.Wait()
	h.checkMatchesBroker(names)

	mid, _ := reconcileCount(t)
	t.Logf("injected %d conflicts and %d internal errors, %d status patches passed; %.0f reconciles for %d jobs",
		faults.conflicts.Load(), faults.internals.Load(), faults.passed.Load(), mid-before, len(names))
	if faults.conflicts.Load() == 0 || faults.internals.Load() == 0 {
		t.Fatalf("the test injected %d conflicts and %d internal errors; it must inject both", faults.conflicts.Load(), faults.internals.Load())
	}
	// Each failed write costs a requeue, each event at most one reconcile,
	// each bump none (the predicate ignores metadata-only updates): a hot
	// loop would show thousands.
	if limit := float64(30*len(names)) + 3*float64(faults.conflicts.Load()+faults.internals.Load()); mid-before > limit {
		t.Fatalf("%.0f reconciles for %d jobs, more than %.0f: the controller spins on write errors", mid-before, len(names), limit)
	}
	for _, n := range names {
		if s, _, phases := h.counts.writes(n); s > 8 {
			t.Errorf("FluxJob %s: %d successful status writes (%v), want at most 8", n, s, phases)
		}
	}
	// Settled: nothing requeues any more. A hot loop is the absence of a
	// quiet period, which nothing can signal, so this one negative check
	// has to wait: 3s is longer than any requeue interval a finished
	// FluxJob could use here (UnreachableRetry, 2s, is the longest), so a
	// loop shows within it.
	time.Sleep(3 * time.Second)
	after, panicsAfter := reconcileCount(t)
	if after != mid {
		t.Fatalf("%.0f reconciles after every FluxJob ended: a hot loop", after-mid)
	}
	if panicsAfter != panicsBefore {
		t.Fatalf("%.0f reconcile panics", panicsAfter-panicsBefore)
	}
}
