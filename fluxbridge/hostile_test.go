package fluxbridge

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// hostileDialOptions are the test transport's options with a keepalive
// pinging every 20ms, answered within timeout.
func hostileDialOptions(timeout time.Duration) []flux.Option {
	return append(testDialOptions(), flux.WithKeepalive(20*time.Millisecond, timeout))
}

// TestHostileBroker runs an executor against a test broker in each
// hostile mode. Modes that break the wire end that executor's connection
// with a *flux.ProtocolError naming the reason (its futures fail with
// it); modes that flood it with events or huge contexts leave it working
// within its bounds (stored events, queued callback calls, context
// sizes). Either way an executor on another, sane broker is unaffected,
// and a new executor to the broker once it behaves works.
func TestHostileBroker(t *testing.T) {
	tests := []struct {
		mode   testbroker.Hostile
		reason string // "": the connection survives
		cmd    []string
	}{
		{testbroker.HostileOversized, flux.ReasonMessageTooLarge, []string{"true"}},
		{testbroker.HostileGarbage, flux.ReasonMalformedMessage, []string{"true"}},
		{testbroker.HostileSlowDrip, flux.ReasonBrokerUnresponsive, []string{"true"}},
		// runs 2s (TimeScale 0.001) amid the endless events
		{testbroker.HostileEndlessStream, "", []string{"sleep", "2000"}},
		{testbroker.HostileHugeContexts, "", []string{"true"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			srv := startBroker(t, testbroker.Options{})
			sane := startBroker(t, testbroker.Options{})
			// A dripping broker is noticed after a second; the others
			// must not be taken for stalled while the client reads
			// their floods (slowly, under the race detector).
			timeout := 2 * time.Minute
			if tt.mode == testbroker.HostileSlowDrip {
				timeout = time.Second
			}
			ex := newTestExecutor(t, srv, execConfig{dialOpts: hostileDialOptions(timeout)})
			saneEx := newTestExecutor(t, sane, execConfig{dialOpts: hostileDialOptions(timeout)})
			// reading ten ~3 MiB huge-context events takes ~1.7s each
			// under the race detector, more on a loaded machine
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			srv.SetHostile(tt.mode)
			f, err := ex.Submit(ctx, spec(t, tt.cmd...), job.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int64
			f.AddAllEventsCallback(func(*Future, job.Event) {
				calls.Add(1)
				time.Sleep(100 * time.Microsecond) // slower than the flood
			})
			if tt.mode == testbroker.HostileEndlessStream {
				deadline := time.Now().Add(testTimeout)
				for srv.HostileSent() < 20000 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				assertFutureBounded(t, f)
			}
			res, err := f.Result(ctx)
			if tt.reason != "" {
				if got := flux.ProtocolReason(err); got != tt.reason {
					t.Fatalf("Result = %d, %v; want a ProtocolError %s", res, err, tt.reason)
				}
				deadline := time.Now().Add(testTimeout)
				for ex.Err() == nil && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond) // the worker notices
				}
				if got := flux.ProtocolReason(ex.Err()); got != tt.reason {
					t.Errorf("executor Err = %v", ex.Err())
				}
			} else {
				if err != nil || res != 0 {
					t.Fatalf("Result = %d, %v", res, err)
				}
				if ex.Err() != nil {
					t.Fatalf("executor broken: %v", ex.Err())
				}
				assertFutureBounded(t, f)
			}
			if tt.mode == testbroker.HostileHugeContexts {
				f.mu.Lock()
				for _, ev := range f.events {
					if _, ok := ev.Context[job.ClippedKey]; !ok {
						t.Errorf("%s event not clipped: %d members", ev.Name, len(ev.Context))
					}
				}
				f.mu.Unlock()
			}
			if srv.HostileSent() == 0 {
				t.Error("the broker sent nothing hostile")
			}

			// the other instance was not affected
			if res, err := saneEx.Submit(ctx, spec(t, "true"), job.SubmitOptions{}); err != nil {
				t.Fatal(err)
			} else if r, err := res.Result(ctx); err != nil || r != 0 {
				t.Fatalf("sane broker: %d, %v", r, err)
			}
			// the broker behaves again: a new executor works
			srv.SetHostile(testbroker.HostileNone)
			ex2 := newTestExecutor(t, srv, execConfig{dialOpts: hostileDialOptions(timeout)})
			f2, err := ex2.Submit(ctx, spec(t, "true"), job.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := f2.Result(ctx); err != nil || r != 0 {
				t.Fatalf("new executor: %d, %v", r, err)
			}
		})
	}
}

// assertFutureBounded checks f's bounded structures.
func assertFutureBounded(t *testing.T, f *Future) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.events); n > MaxStoredEvents {
		t.Errorf("%d events stored, bound %d", n, MaxStoredEvents)
	}
	if n, bound := len(f.queue), MaxQueuedEvents*max(1, len(f.eventCBs))+4; n > bound {
		t.Errorf("%d callback calls queued, bound %d", n, bound)
	}
	cost := 0
	for _, ev := range f.events {
		c := job.ContextCost(ev.Context)
		if c > MaxEventContextCost+2*job.MaxClippedString {
			t.Errorf("%s context costs %d", ev.Name, c)
		}
		cost += c
	}
	if cost > MaxStoredContextCost+MaxStoredEvents*(MaxEventContextCost/2) {
		t.Errorf("stored contexts cost %d", cost)
	}
}
