package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestEnvtestSuspendBeforeSubmission: a suspended FluxJob is not submitted
// (phase Suspended, Suspended=True); resumed, it runs once.
func TestEnvtestSuspendBeforeSubmission(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("sus", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Suspend: true})
	obj := h.waitPhase("sus", fluxjobv1.PhaseSuspended, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionSuspended, metav1.ConditionTrue, fluxjobv1.ReasonSuspended)
	requireCondition(t, obj, fluxjobv1.ConditionFinished, metav1.ConditionFalse, fluxjobv1.ReasonInProgress)
	if submitAttempt(obj) != nil || len(h.broker.Jobs()) != 0 {
		t.Fatalf("a suspended FluxJob was submitted: marker %v, broker jobs %v", submitAttempt(obj), h.broker.Jobs())
	}
	h.patchSpec("sus", func(s *fluxjobv1.FluxJobSpec) { s.Suspend = false })
	obj = h.waitPhase("sus", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if _, ok := findCondition(obj, fluxjobv1.ConditionSuspended); ok {
		t.Fatal("Suspended condition left after resuming")
	}
	if n := len(h.broker.Jobs()); n != 1 {
		t.Fatalf("broker has %d jobs, want 1", n)
	}
}

// TestEnvtestSuspendAfterSubmission: a submitted job that has not started
// is held at urgency 0 and gets spec.urgency back on resume; it is
// allocated only after that. A running job is not affected.
func TestEnvtestSuspendAfterSubmission(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.broker.PauseScheduling(true) // keep it in SCHED until it is held
	h.create("held", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(12))})
	h.waitPhase("held", fluxjobv1.PhaseSubmitted, 30*time.Second)
	h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Suspend = true })
	obj := h.waitFor("held", 30*time.Second, "held at urgency 0", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Phase == fluxjobv1.PhaseSuspended && o.Status.Urgency != nil && *o.Status.Urgency == 0
	})
	requireCondition(t, obj, fluxjobv1.ConditionSuspended, metav1.ConditionTrue, fluxjobv1.ReasonSuspended)
	h.broker.PauseScheduling(false)
	h.patchSpec("held", func(s *fluxjobv1.FluxJobSpec) { s.Suspend = false })
	obj = h.waitPhase("held", fluxjobv1.PhaseSucceeded, 30*time.Second)
	hold := h.fluxEventIndex(obj.Status.JobID, "urgency", "urgency", float64(0))
	resume := h.fluxEventIndex(obj.Status.JobID, "urgency", "urgency", float64(12))
	alloc := h.fluxEventIndex(obj.Status.JobID, "alloc", "", nil)
	if hold < 0 || resume < hold || alloc < resume {
		t.Fatalf("urgency 0 at %d, urgency 12 at %d, alloc at %d: want hold, resume, then alloc (%v)",
			hold, resume, alloc, h.brokerEvents(jobIDOf(obj)))
	}

	h.create("running", cmdSpec("sleep", "300"))
	h.waitPhase("running", fluxjobv1.PhaseRunning, 30*time.Second)
	h.patchSpec("running", func(s *fluxjobv1.FluxJobSpec) { s.Suspend = true })
	obj = h.waitFor("running", 30*time.Second, "AlreadyStarted",
		conditionIs(fluxjobv1.ConditionSuspended, metav1.ConditionFalse, fluxjobv1.ReasonAlreadyStarted))
	if obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("phase %s, want Running", obj.Status.Phase)
	}
}

func findCondition(o *fluxjobv1.FluxJob, typ string) (metav1.Condition, bool) {
	for _, c := range o.Status.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return metav1.Condition{}, false
}

func jobIDOf(o *fluxjobv1.FluxJob) job.ID { return job.ID(o.Status.JobID) }
