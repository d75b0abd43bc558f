package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

const topicUrgency = "job-manager.urgency"

// indexUrgencies returns, per index of obj, the urgencies of the urgency
// events in its Flux job's eventlog (one per job-manager.urgency Flux
// accepted).
func (h *harness) indexUrgencies(obj *fluxjobv1.FluxJob, n int) [][]int {
	h.t.Helper()
	byName := h.brokerJobsByName()
	out := make([][]int, n)
	for i := range n {
		ids := byName[jobspec.IndexName(obj, i, 0)]
		if len(ids) != 1 {
			h.t.Fatalf("index %d: Flux jobs %v", i, ids)
		}
		out[i] = []int{}
		for _, ev := range h.brokerEvents(ids[0]) {
			if ev.Name == "urgency" {
				uc, err := ev.Urgency()
				if err != nil {
					h.t.Fatal(err)
				}
				out[i] = append(out[i], uc.Urgency)
			}
		}
	}
	return out
}

// arrayUrgencyIs waits for status.array.urgency to be u.
func (h *harness) arrayUrgencyIs(name string, u int32) *fluxjobv1.FluxJob {
	h.t.Helper()
	return h.waitFor(name, 30*time.Second, fmt.Sprint("status.array.urgency ", u), func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Array != nil && o.Status.Array.Urgency != nil && *o.Status.Array.Urgency == u
	})
}

// TestEnvtestArrayUrgency: a change of spec.urgency reaches every
// submitted, unstarted index of an array (job-manager.urgency per index),
// leaves the running ones alone, is recorded in status.array.urgency so
// that a restarted manager sends nothing again, and is refused by the
// tenancy gate above 16 outside the privileged namespaces, nothing sent.
func TestEnvtestArrayUrgency(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Cores: 1}, Options{})
	h.start()
	sent := func() int { return h.broker.RequestCount(topicUrgency) }

	t.Run("held array released", func(t *testing.T) {
		spec := arraySpec("0-4", "true")
		spec.Urgency = ptrTo(int32(0))
		h.create("held", spec)
		o := h.pendingIs("held", fluxjobv1.PendingHeld, "5 of 5 indexes wait in Flux")
		if o.Status.Array.Urgency == nil || *o.Status.Array.Urgency != 0 {
			t.Fatalf("status.array.urgency %v, want 0", o.Status.Array.Urgency)
		}
		before := sent()
		h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(16)) })
		o = h.waitPhase("held", fluxjobv1.PhaseSucceeded, 60*time.Second)
		if o.Status.Array.Succeeded != 5 || o.Status.Array.Urgency == nil || *o.Status.Array.Urgency != 16 {
			t.Errorf("status.array %+v", o.Status.Array)
		}
		for i, us := range h.indexUrgencies(o, 5) {
			if len(us) != 1 || us[0] != 16 {
				t.Errorf("index %d: urgency events %v, want [16]", i, us)
			}
		}
		if n := sent() - before; n != 5 {
			t.Errorf("%d job-manager.urgency requests, want 5", n)
		}
		if ev := h.waitEvent("held", "UrgencyChanged", 10*time.Second); !strings.Contains(ev.Note, "urgency 0 -> 16: 5 indexes given it, 0 already running or ended, 0 refused") {
			t.Errorf("event %q", ev.Note)
		}
	})

	t.Run("change while one runs", func(t *testing.T) {
		// One core: one index runs, the others wait for it.
		h.create("busy", arraySpec("0-3", "sleep", "3000"))
		h.waitFor("busy", 30*time.Second, "one running, all submitted", func(o *fluxjobv1.FluxJob) bool {
			return o.Status.Array != nil && o.Status.Array.Running == 1 && o.Status.Array.Active == 4
		})
		h.patchSpec("busy", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(10)) })
		o := h.arrayUrgencyIs("busy", 10)
		running := 0
		for i, us := range h.indexUrgencies(o, 4) {
			switch {
			case len(us) == 0:
				running++
			case len(us) != 1 || us[0] != 10:
				t.Errorf("index %d: urgency events %v, want [10] or none (running)", i, us)
			}
		}
		if running != 1 {
			t.Errorf("%d indexes kept their urgency, want the 1 running", running)
		}
		if ev := h.waitEvent("busy", "UrgencyChanged", 10*time.Second); !strings.Contains(ev.Note, "urgency 16 -> 10: 3 indexes given it, 1 already running or ended, 0 refused") {
			t.Errorf("event %q", ev.Note)
		}
		if err := h.c.Delete(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		h.waitGone("busy", 60*time.Second)
	})

	t.Run("restart after the change", func(t *testing.T) {
		h.broker.PauseScheduling(true)
		spec := arraySpec("0-2", "true")
		spec.Urgency = ptrTo(int32(0))
		h.create("restart", spec)
		h.arrayUrgencyIs("restart", 0)
		h.waitFor("restart", 30*time.Second, "3 submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.Array.Active == 3 })
		before := sent()
		h.patchSpec("restart", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(8)) })
		h.arrayUrgencyIs("restart", 8)
		if n := sent() - before; n != 3 {
			t.Errorf("%d job-manager.urgency requests, want 3", n)
		}
		h.stop()
		lists := h.broker.RequestCount("job-list.list")
		h.start()
		// The new manager looks the indexes up by name (its reconcile
		// after that one is where a re-send would be), then they run.
		deadline := time.Now().Add(30 * time.Second)
		for h.broker.RequestCount("job-list.list") == lists && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		h.broker.PauseScheduling(false)
		o := h.waitPhase("restart", fluxjobv1.PhaseSucceeded, 60*time.Second)
		if n := sent() - before; n != 3 {
			t.Errorf("%d job-manager.urgency requests across the restart, want 3 (none again)", n)
		}
		for i, us := range h.indexUrgencies(o, 3) {
			if len(us) != 1 || us[0] != 8 {
				t.Errorf("index %d: urgency events %v, want [8]", i, us)
			}
		}
	})

	t.Run("above 16 outside the privileged namespaces", func(t *testing.T) {
		spec := arraySpec("0-2", "true")
		spec.Urgency = ptrTo(int32(0))
		h.create("guest", spec)
		h.waitFor("guest", 30*time.Second, "3 submitted at 0", func(o *fluxjobv1.FluxJob) bool {
			return o.Status.Array != nil && o.Status.Array.Active == 3 && o.Status.Array.Urgency != nil
		})
		before := sent()
		h.patchSpec("guest", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(20)) })
		o := h.waitFor("guest", 30*time.Second, "UrgencyApplied=False", func(o *fluxjobv1.FluxJob) bool {
			c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionUrgencyApplied)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == fluxjobv1.ReasonUrgencyRejected
		})
		if c := meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionUrgencyApplied); !strings.Contains(c.Message, "--privileged-namespaces") {
			t.Errorf("condition message %q", c.Message)
		}
		if ev := h.waitEvent("guest", fluxjobv1.ReasonUrgencyRejected, 10*time.Second); !strings.Contains(ev.Note, "urgency 20") {
			t.Errorf("event %q", ev.Note)
		}
		if n := sent() - before; n != 0 {
			t.Errorf("%d job-manager.urgency requests for a refused urgency, want 0", n)
		}
		if u := o.Status.Array.Urgency; u == nil || *u != 0 || o.Status.Phase.IsTerminal() {
			t.Errorf("phase %s, status.array.urgency %v, want 0", o.Status.Phase, u)
		}
		// Back within what the namespace may use: applied, the condition goes.
		h.patchSpec("guest", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(16)) })
		o = h.waitPhase("guest", fluxjobv1.PhaseSucceeded, 60*time.Second)
		if meta.FindStatusCondition(o.Status.Conditions, fluxjobv1.ConditionUrgencyApplied) != nil {
			t.Errorf("UrgencyApplied still set: %+v", o.Status.Conditions)
		}
		if n := sent() - before; n != 3 {
			t.Errorf("%d job-manager.urgency requests, want 3 (for 16 only)", n)
		}
	})
}
