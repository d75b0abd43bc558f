// Package pending says why a Flux job waits, from Flux's own data: the
// job's eventlog as job.Summary reads it (urgency, dependency-add and
// dependency-remove, validate/depend/priority, alloc) and the instance's
// broker.Waiting (its queues, the scheduler's annotations), which is read
// only for a job that waits in SCHED (WantsWaiting). Pure functions,
// table-tested; the controller turns a Reason into status.pending.
package pending

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Reason is why one Flux job waits.
type Reason struct {
	// Reason is one of the fluxjobv1.Pending* values.
	Reason string
	// Message says it in words, with Flux's own descriptions.
	Message string
	// Since is the eventlog time of the event that set the reason (0: the
	// reason has no event of its own, such as a stopped queue).
	Since float64
	// Estimate is the scheduler's t_estimate (0: none).
	Estimate float64
}

// Of returns why the Flux job of sum waits, and false once it
// no longer waits (allocated, ending, ended) or before Flux validated it.
// queue is the job's queue as the FluxJob asked for it ("" for the
// instance's default); w is the instance's latest Waiting (zero if not
// read).
func Of(id job.ID, sum job.Summary, queue string, w broker.Waiting) (Reason, bool) {
	if sum.Allocated() || sum.Ended() || sum.Fatal != nil || sum.ValidateTime == 0 {
		return Reason{}, false
	}
	if sum.Urgency == 0 {
		return Reason{Reason: fluxjobv1.PendingHeld, Since: sum.UrgencyTime, Message: "Held in Flux at urgency 0"}, true
	}
	if sum.DependTime == 0 {
		return dependReason(sum), true
	}
	if sum.PriorityTime == 0 {
		return Reason{Reason: fluxjobv1.PendingPriority, Since: sum.DependTime,
			Message: "Waiting in Flux for a priority (state PRIORITY: a priority plugin, such as flux-accounting's, holds the job)"}, true
	}
	if sum.Priority == 0 {
		return Reason{Reason: fluxjobv1.PendingHeld, Since: sum.PriorityTime,
			Message: "Held in Flux at priority 0 (set by the instance's priority plugin)"}, true
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
		return Reason{Reason: fluxjobv1.PendingQueueStopped, Message: msg}, true
	}
	switch {
	case listed && si.TEstimate > 0:
		return Reason{Reason: fluxjobv1.PendingResources, Since: sum.PriorityTime, Estimate: si.TEstimate,
			Message: "Waiting for resources; the scheduler estimates the start at " + unix(si.TEstimate).Truncate(time.Second).Format(time.RFC3339)}, true
	case listed && si.ReasonPending != "":
		return Reason{Reason: fluxjobv1.PendingResources, Since: sum.PriorityTime,
			Message: fmt.Sprintf("Waiting for resources: %s (%d jobs ahead)", si.ReasonPending, si.JobsAhead)}, true
	}
	return Reason{Reason: fluxjobv1.PendingScheduling, Since: sum.PriorityTime,
		Message: fmt.Sprintf("Waiting for the scheduler (Flux state SCHED, priority %d)", sum.Priority)}, true
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
func dependReason(sum job.Summary) Reason {
	r := Reason{Reason: fluxjobv1.PendingDependency, Since: sum.ValidateTime}
	if sum.DependencyTime != 0 {
		r.Since = sum.DependencyTime
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
		r.Reason = fluxjobv1.PendingLimit
	case len(begin) > 0:
		r.Reason = fluxjobv1.PendingBeginTime
		if t, err := strconv.ParseFloat(strings.TrimPrefix(begin[0], "begin-time="), 64); err == nil {
			r.Message = "Waiting for its begin time " + unix(t).Truncate(time.Second).Format(time.RFC3339) + " (" + begin[0] + ")"
			return r
		}
	}
	switch {
	case len(sum.Dependencies) == 0:
		r.Message = "Waiting in Flux for its dependencies (state DEPEND)"
	case r.Reason == fluxjobv1.PendingLimit:
		r.Message = "Held in Flux by a limit: " + strings.Join(sum.Dependencies, ", ")
	default:
		r.Message = "Waiting in Flux for its dependencies: " + strings.Join(sum.Dependencies, ", ")
	}
	if more := sum.Pending - len(sum.Dependencies); more > 0 {
		r.Message += fmt.Sprintf(" and %d more", more)
	}
	return r
}

// isLimit reports whether a dependency description is a limit's hold:
// flux-accounting's (max-running-jobs-user-limit, max-resources-user-limit,
// max-run-jobs-queue, ...), by their common shapes.
func isLimit(desc string) bool {
	return strings.HasSuffix(desc, "-limit") || strings.HasPrefix(desc, "max-")
}

// WantsWaiting reports whether the reason of sum's job depends on the
// instance's Waiting: it waits in SCHED, neither held nor ending.
func WantsWaiting(sum job.Summary) bool {
	return sum.PriorityTime != 0 && sum.Priority != 0 && sum.Urgency != 0 &&
		!sum.Allocated() && !sum.Ended() && sum.Fatal == nil
}

// unix converts an eventlog timestamp (seconds since the epoch).
func unix(ts float64) time.Time {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9)).UTC()
}
