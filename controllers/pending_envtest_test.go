package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// pendingIs waits for status.pending.reason to be reason (with a message
// containing msg).
func (h *harness) pendingIs(name, reason, msg string) *fluxjobv1.FluxJob {
	h.t.Helper()
	return h.waitFor(name, 30*time.Second, "pending "+reason, func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Pending != nil && o.Status.Pending.Reason == reason && strings.Contains(o.Status.Pending.Message, msg)
	})
}

// queueStart starts or stops a queue of the harness's broker, as
// `flux queue start|stop -m reason QUEUE` does.
func (h *harness) queueStart(queue string, start bool, reason string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, h.broker.URI())
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	req := map[string]any{"name": queue, "start": start, "all": false}
	if reason != "" {
		req["reason"] = reason
	}
	if err := c.RPC(ctx, "job-manager.queue-start", req, nil); err != nil {
		h.t.Fatal(err)
	}
}

// TestEnvtestPendingReasons: a FluxJob that waits says why in
// status.pending, for each way to wait, from what the (test) broker sends
// as flux-core 0.88 does (test/realflux TestPendingReasons compares the
// two), and the reason goes away once the job starts.
func TestEnvtestPendingReasons(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01, Cores: 1, Queues: []string{"batch", "debug"}, DefaultQueue: "batch"}, Options{})
	h.start()

	t.Run("before submission", func(t *testing.T) {
		h.create("suspended", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Suspend: true})
		o := h.pendingIs("suspended", fluxjobv1.PendingSuspended, "spec.suspend")
		if o.Status.Pending.Since == nil {
			t.Error("no since")
		}
		h.create("after-missing", dependsOn("missing", "", "true"))
		h.pendingIs("after-missing", fluxjobv1.PendingWaitingForDependency, `"missing"`)
	})

	t.Run("held", func(t *testing.T) {
		h.create("held", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(0))})
		o := h.pendingIs("held", fluxjobv1.PendingHeld, "urgency 0")
		if o.Status.Phase != fluxjobv1.PhaseSubmitted {
			t.Errorf("phase %s, want Submitted", o.Status.Phase)
		}
		h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Urgency = ptrTo(int32(16)) })
		o = h.waitPhase("held", fluxjobv1.PhaseSucceeded, 30*time.Second)
		if o.Status.Pending != nil {
			t.Errorf("succeeded with pending %+v", o.Status.Pending)
		}
	})

	t.Run("begin time", func(t *testing.T) {
		at := metav1.NewTime(time.Now().Add(time.Hour).Truncate(time.Second))
		h.create("later", fluxjobv1.FluxJobSpec{Command: []string{"true"}, BeginTime: &at})
		h.pendingIs("later", fluxjobv1.PendingBeginTime, at.UTC().Format(time.RFC3339))
	})

	// One core: "busy" holds it while the others wait.
	h.create("busy", cmdSpec("sleep", "3000"))
	h.waitPhase("busy", fluxjobv1.PhaseRunning, 30*time.Second)

	t.Run("dependency", func(t *testing.T) {
		h.create("after-busy", dependsOn("busy", fluxjobv1.DependAfterAny, "true"))
		busy, _ := h.get("busy")
		o := h.pendingIs("after-busy", fluxjobv1.PendingDependency, "after-finish="+busy.Status.JobIDF58)
		if o.Status.Pending.Since == nil || o.Status.Pending.Since.Before(o.Status.SubmitTime) {
			t.Errorf("since %v before the submission %v", o.Status.Pending.Since, o.Status.SubmitTime)
		}
	})

	t.Run("scheduling, then the queue stops and starts", func(t *testing.T) {
		h.create("waits", cmdSpec("true"))
		h.pendingIs("waits", fluxjobv1.PendingScheduling, "SCHED")
		// Nothing happens to the job: the instance's read, at the pace,
		// tells the controller.
		h.queueStart("batch", false, "maintenance window")
		h.pendingIs("waits", fluxjobv1.PendingQueueStopped, `"batch" is stopped: maintenance window`)
		h.queueStart("batch", true, "")
		h.pendingIs("waits", fluxjobv1.PendingScheduling, "SCHED")
	})

	t.Run("stopped queue", func(t *testing.T) {
		h.queueStart("debug", false, "")
		h.create("in-debug", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Queue: "debug"})
		h.pendingIs("in-debug", fluxjobv1.PendingQueueStopped, `Flux queue "debug" is stopped`)
	})

	// The end of busy lets the dependant and the waiting job run; their
	// reasons go.
	if err := h.c.Delete(context.Background(), mustGet(t, h, "busy")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"after-busy", "waits"} {
		if o := h.waitPhase(n, fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Pending != nil {
			t.Errorf("%s succeeded with pending %+v", n, o.Status.Pending)
		}
	}
	h.queueStart("debug", true, "")
	if o := h.waitPhase("in-debug", fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Pending != nil {
		t.Errorf("in-debug succeeded with pending %+v", o.Status.Pending)
	}
}

func mustGet(t *testing.T, h *harness, name string) *fluxjobv1.FluxJob {
	t.Helper()
	o, err := h.get(name)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
