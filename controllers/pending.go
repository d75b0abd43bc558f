package controllers

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
)

// Why a FluxJob waits (status.pending): what the controller holds it for
// (admission, suspend, dependsOn), else why its Flux job waits
// (internal/pending: a pure function of the job's eventlog and the
// instance's queues and scheduler annotations).

// pendingOf is status.pending for obj in phase, from the status input; an
// untracked FluxJob with a job ID (before the re-attach after a restart)
// keeps what its status says. An array says why its indexes wait while
// any does, even once others run (arraypending.go).
func pendingOf(obj *fluxjobv1.FluxJob, phase fluxjobv1.FluxJobPhase, in statusInput, now time.Time) *fluxjobv1.FluxJobPending {
	var fr pending.Reason
	var waits bool
	switch {
	case in.Obs != nil && in.Obs.HasJobID:
		id := job.ID(in.Obs.JobID)
		fr, waits = pending.Of(id, in.Obs.Summary(), obj.Spec.Queue, in.Waiting)
		if waits && fr.Reason == fluxjobv1.PendingHeld && obj.Spec.Suspend {
			fr.Message += " (spec.suspend)"
		} else if waits && fr.Reason == fluxjobv1.PendingHeld && in.Obs.Summary().Urgency == 0 {
			fr.Message += " (kubectl fluxjob release, or flux job urgency " + id.F58() + " default, releases it)"
		}
	case in.Array != nil:
		fr, waits = pending.Array(in.Array.sample, obj.Spec.Queue, in.Waiting)
		if waits && fr.Reason == fluxjobv1.PendingHeld && in.Array.sample.Summary.Urgency == 0 {
			fr.Message += " (an urgency change applies to the indexes submitted after it; flux job urgency ID default releases one)"
		}
		if waits && phase == fluxjobv1.PhaseRunning {
			// Some indexes run, others wait in Flux: the array still
			// says why those wait.
			phase = fluxjobv1.PhaseSubmitted
		}
	case in.Obs == nil && obj.Status.JobID != 0 && in.Hold == nil && (in.Admission == nil || in.Admission.OK):
		if phase.IsTerminal() || phase == fluxjobv1.PhaseRunning {
			return nil
		}
		return obj.Status.Pending
	}
	return pendingStatus(obj.Status.Pending, phase, in.Hold, in.Admission, fr, waits, now)
}

// pendingStatus is status.pending for a FluxJob in phase, given why the
// controller holds it (h), its admission, and the Flux job's reason (ok
// false: none). old is the status's current value: an unchanged reason
// keeps its since, so that recomputing the status changes nothing.
func pendingStatus(old *fluxjobv1.FluxJobPending, phase fluxjobv1.FluxJobPhase, h *hold, adm *admission, fr pending.Reason, fluxWaits bool, now time.Time) *fluxjobv1.FluxJobPending {
	var r pending.Reason
	switch {
	case phase != fluxjobv1.PhasePending && phase != fluxjobv1.PhaseSubmitted && phase != fluxjobv1.PhaseSuspended:
		return nil
	case adm != nil && !adm.OK:
		r = pending.Reason{Reason: fluxjobv1.PendingNotAdmitted, Message: adm.Message}
	case h != nil && h.Reason == fluxjobv1.ReasonSuspended:
		r = pending.Reason{Reason: fluxjobv1.PendingSuspended, Message: h.Message}
	case h != nil:
		r = pending.Reason{Reason: fluxjobv1.PendingWaitingForDependency, Message: h.Message}
	case fluxWaits:
		r = fr
	default:
		return nil
	}
	p := &fluxjobv1.FluxJobPending{Reason: r.Reason, Message: fluxjobv1.Clip(r.Message, fluxjobv1.MaxPendingMessageLength)}
	switch {
	case old != nil && old.Reason == r.Reason && old.Since != nil:
		p.Since = old.Since
	case r.Since != 0:
		p.Since = eventTime(r.Since)
	default:
		t := metav1.NewTime(now.Truncate(time.Second))
		p.Since = &t
	}
	if r.Estimate > 0 {
		p.EstimatedStartTime = eventTime(r.Estimate)
	}
	return p
}
