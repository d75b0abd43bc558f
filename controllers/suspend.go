package controllers

import (
	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Suspend
//
// spec.suspend is the admission hook batch/v1 Job, JobSet and Kueue use.
// Before submission it keeps the FluxJob from being submitted at all
// (phase Suspended). Once Flux has the job, Flux's own hold is used: the
// job's urgency is set to 0 (the priority plugin then gives it priority 0
// and the scheduler leaves it alone, as `flux job urgency ID hold` does),
// and turning suspend off sets spec.urgency again. A job that has started
// cannot be held: suspend has no effect on it (as Kueue's contract for a
// started workload), and the Suspended condition says so (AlreadyStarted).

// specUrgency is spec.urgency, or Flux's default.
func specUrgency(obj *fluxjobv1.FluxJob) int {
	if obj.Spec.Urgency != nil {
		return int(*obj.Spec.Urgency)
	}
	return int(fluxjobv1.DefaultUrgency)
}

// submitUrgency is the urgency to submit obj with: 0 (held) when it is
// suspended, which happens only when an earlier submission attempt had to
// be repeated after suspend was set; spec.urgency otherwise.
func submitUrgency(obj *fluxjobv1.FluxJob) int {
	if obj.Spec.Suspend {
		return int(fluxjobv1.MinUrgency)
	}
	return specUrgency(obj)
}

// desiredUrgency is the urgency the Flux job should have: 0 while
// suspended and not started, spec.urgency otherwise.
func desiredUrgency(obj *fluxjobv1.FluxJob, sum job.Summary) int {
	if obj.Spec.Suspend && !sum.Allocated() {
		return int(fluxjobv1.MinUrgency)
	}
	return specUrgency(obj)
}

// suspendHold is the hold of a suspended FluxJob that was never
// submitted.
func suspendHold() *hold {
	return &hold{Reason: fluxjobv1.ReasonSuspended, Message: "Suspended (spec.suspend): not submitted to Flux"}
}

// applySuspend adjusts the derived job state for spec.suspend: a FluxJob
// that is suspended and has not started is in phase Suspended; one whose
// status still says Suspended after suspend was turned off goes back to
// Pending or Submitted.
func applySuspend(js *jobState, obj *fluxjobv1.FluxJob, m marker) {
	if js.phase == fluxjobv1.PhaseSuspended && !obj.Spec.Suspend {
		js.phase = fluxjobv1.PhasePending
		if obj.Status.JobID != 0 {
			js.phase = fluxjobv1.PhaseSubmitted
		}
		js.reason, js.message = phaseReason(js.phase), defaultMessage(obj, m, js.phase)
	}
	if !obj.Spec.Suspend {
		return
	}
	switch js.phase {
	case fluxjobv1.PhasePending, fluxjobv1.PhaseSuspended:
		js.phase, js.reason = fluxjobv1.PhaseSuspended, fluxjobv1.ReasonSuspended
		if !m.attempted() {
			js.message = suspendHold().Message
		} else {
			js.message = "Suspended (spec.suspend): the Flux job will be held at urgency 0"
		}
	case fluxjobv1.PhaseSubmitted:
		js.phase, js.reason = fluxjobv1.PhaseSuspended, fluxjobv1.ReasonSuspended
		js.message = "Suspended (spec.suspend): the Flux job is held at urgency 0 until suspend is turned off"
	}
}
