package controllers

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Why a FluxJob waits (status.pending): a pure function of what the
// controller holds it for, the Flux job's eventlog (job.Summary: urgency,
// dependency-add/-remove, validate/depend/priority, alloc) and the
// instance's Waiting (its queues, the scheduler's annotations), which the
// reconciler reads only for a job waiting in SCHED (wantsWaiting).

// waitReason is one computed reason; since is an eventlog time (0: the
// reason has no event of its own).
type waitReason struct {
	reason, message string
	since           float64
	estimate        float64
}

// fluxWaitReason returns why the Flux job of sum waits, and false once it
// no longer waits (allocated, ending, ended) or before Flux validated it.
// queue is the job's queue as the FluxJob asked for it ("" for the
// instance's default); w is the instance's latest Waiting (zero if not
// read).
func fluxWaitReason(id job.ID, sum job.Summary, queue string, w broker.Waiting) (waitReason, bool) {
	if sum.Allocated() || sum.Ended() || sum.Fatal != nil || sum.ValidateTime == 0 {
		return waitReason{}, false
	}
	if sum.Urgency == 0 {
		return waitReason{reason: fluxjobv1.PendingHeld, since: sum.UrgencyTime, message: "Held in Flux at urgency 0"}, true
	}
	if sum.DependTime == 0 {
		return dependReason(sum), true
	}
	if sum.PriorityTime == 0 {
		return waitReason{reason: fluxjobv1.PendingPriority, since: sum.DependTime,
			message: "Waiting in Flux for a priority (state PRIORITY: a priority plugin, such as flux-accounting's, holds the job)"}, true
	}
	if sum.Priority == 0 {
		return waitReason{reason: fluxjobv1.PendingHeld, since: sum.PriorityTime,
			message: "Held in Flux at priority 0 (set by the instance's priority plugin)"}, true
	}
	si, listed := w.Jobs[id]
	if listed {
		queue = si.Queue
	}
	if q, ok := w.Queue(queue); ok && !q.Started || w.AllStopped() {
		if !ok {
			q = firstStopped(w)
		}
		msg := "Flux queue is stopped"
		if queue != "" {
			msg = fmt.Sprintf("Flux queue %q is stopped", queue)
		}
		if q.StopReason != "" {
			msg += ": " + q.StopReason
		}
		return waitReason{reason: fluxjobv1.PendingQueueStopped, message: msg}, true
	}
	switch {
	case listed && si.TEstimate > 0:
		return waitReason{reason: fluxjobv1.PendingResources, since: sum.PriorityTime, estimate: si.TEstimate,
			message: "Waiting for resources; the scheduler estimates the start at " + floatTime(si.TEstimate).Truncate(time.Second).Format(time.RFC3339)}, true
	case listed && si.ReasonPending != "":
		return waitReason{reason: fluxjobv1.PendingResources, since: sum.PriorityTime,
			message: fmt.Sprintf("Waiting for resources: %s (%d jobs ahead)", si.ReasonPending, si.JobsAhead)}, true
	}
	return waitReason{reason: fluxjobv1.PendingScheduling, since: sum.PriorityTime,
		message: fmt.Sprintf("Waiting for the scheduler (Flux state SCHED, priority %d)", sum.Priority)}, true
}

// firstStopped returns a stopped queue of w, for its reason.
func firstStopped(w broker.Waiting) broker.QueueState {
	for _, q := range w.Queues {
		if !q.Started {
			return q
		}
	}
	return broker.QueueState{}
}

// dependReason is the reason of a job in DEPEND, from its outstanding
// dependencies: a job dependency (after*, singleton, anything unknown)
// first, then a limit, then the begin time, as all must clear.
func dependReason(sum job.Summary) waitReason {
	r := waitReason{reason: fluxjobv1.PendingDependency, since: sum.ValidateTime}
	if sum.DependencyTime != 0 {
		r.since = sum.DependencyTime
	}
	var jobs, limits, begin []string
	for _, d := range sum.Dependencies {
		switch {
		case strings.HasPrefix(d, "begin-time="):
			begin = append(begin, d)
		case isLimit(d):
			limits = append(limits, d)
		default:
			jobs = append(jobs, d)
		}
	}
	switch {
	case len(jobs) > 0:
	case len(limits) > 0:
		r.reason = fluxjobv1.PendingLimit
	case len(begin) > 0:
		r.reason = fluxjobv1.PendingBeginTime
		if t, err := strconv.ParseFloat(strings.TrimPrefix(begin[0], "begin-time="), 64); err == nil {
			r.message = "Waiting for its begin time " + floatTime(t).Truncate(time.Second).Format(time.RFC3339) + " (" + begin[0] + ")"
			return r
		}
	}
	switch {
	case len(sum.Dependencies) == 0:
		r.message = "Waiting in Flux for its dependencies (state DEPEND)"
	case r.reason == fluxjobv1.PendingLimit:
		r.message = "Held in Flux by a limit: " + strings.Join(sum.Dependencies, ", ")
	default:
		r.message = "Waiting in Flux for its dependencies: " + strings.Join(sum.Dependencies, ", ")
	}
	if more := sum.Pending - len(sum.Dependencies); more > 0 {
		r.message += fmt.Sprintf(" and %d more", more)
	}
	return r
}

// isLimit reports whether a dependency description is a limit's hold:
// flux-accounting's (max-running-jobs-user-limit, max-resources-user-limit,
// max-run-jobs-queue, ...), by their common shapes.
func isLimit(desc string) bool {
	return strings.HasSuffix(desc, "-limit") || strings.HasPrefix(desc, "max-")
}

// wantsWaiting reports whether the reason of sum's job depends on the
// instance's Waiting: it waits in SCHED, neither held nor ending.
func wantsWaiting(sum job.Summary) bool {
	return sum.PriorityTime != 0 && sum.Priority != 0 && sum.Urgency != 0 &&
		!sum.Allocated() && !sum.Ended() && sum.Fatal == nil
}

// pending is status.pending for obj in phase, from the status input; an
// untracked FluxJob with a job ID (before the re-attach after a restart)
// keeps what its status says.
func pending(obj *fluxjobv1.FluxJob, phase fluxjobv1.FluxJobPhase, in statusInput, now time.Time) *fluxjobv1.FluxJobPending {
	var fr waitReason
	var waits bool
	switch {
	case in.Obs != nil && in.Obs.HasJobID:
		id := job.ID(in.Obs.JobID)
		fr, waits = fluxWaitReason(id, in.Obs.Summary(), obj.Spec.Queue, in.Waiting)
		if waits && fr.reason == fluxjobv1.PendingHeld && obj.Spec.Suspend {
			fr.message += " (spec.suspend)"
		} else if waits && fr.reason == fluxjobv1.PendingHeld && in.Obs.Summary().Urgency == 0 {
			fr.message += " (kubectl fluxjob release, or flux job urgency " + id.F58() + " default, releases it)"
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
func pendingStatus(old *fluxjobv1.FluxJobPending, phase fluxjobv1.FluxJobPhase, h *hold, adm *admission, fr waitReason, fluxWaits bool, now time.Time) *fluxjobv1.FluxJobPending {
	var r waitReason
	switch {
	case phase != fluxjobv1.PhasePending && phase != fluxjobv1.PhaseSubmitted && phase != fluxjobv1.PhaseSuspended:
		return nil
	case adm != nil && !adm.OK:
		r = waitReason{reason: fluxjobv1.PendingNotAdmitted, message: adm.Message}
	case h != nil && h.Reason == fluxjobv1.ReasonSuspended:
		r = waitReason{reason: fluxjobv1.PendingSuspended, message: h.Message}
	case h != nil:
		r = waitReason{reason: fluxjobv1.PendingWaitingForDependency, message: h.Message}
	case fluxWaits:
		r = fr
	default:
		return nil
	}
	p := &fluxjobv1.FluxJobPending{Reason: r.reason, Message: fluxjobv1.Clip(r.message, fluxjobv1.MaxPendingMessageLength)}
	switch {
	case old != nil && old.Reason == r.reason && old.Since != nil:
		p.Since = old.Since
	case r.since != 0:
		p.Since = eventTime(r.since)
	default:
		t := metav1.NewTime(now.Truncate(time.Second))
		p.Since = &t
	}
	if r.estimate > 0 {
		p.EstimatedStartTime = eventTime(r.estimate)
	}
	return p
}
