package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// currentUrgency is the job's urgency per its eventlog (the submit
// event's, or the latest urgency event's), or -1 if not seen yet.
func currentUrgency(obs observation) int {
	u := -1
	for _, ev := range obs.Events {
		if ev.Name == "submit" || ev.Name == "urgency" {
			if v, ok := intField(ev.Context, "urgency"); ok {
				u = v
			}
		}
	}
	return u
}

// syncUrgency applies a changed spec.urgency to the Flux job
// (job-manager.urgency). A value Flux refuses (EPERM for a guest above 16,
// EINVAL once resources are allocated) is recorded in the tracker, shown
// as condition UrgencyApplied=False with the broker's message and a
// Warning event, and not retried until spec.urgency changes again. It
// returns a requeue delay when the broker could not be reached.
func (r *FluxJobReconciler) syncUrgency(ctx context.Context, obj *fluxjobv1.FluxJob, obs observation) time.Duration {
	if obj.Spec.Urgency == nil || !obs.HasJobID || obs.Outcome.Kind != outcomeNone || jobEnded(obs) {
		return 0
	}
	want := desiredUrgency(obj, obs)
	cur := currentUrgency(obs)
	switch {
	case cur < 0:
		return 0 // the submit event will poke us
	case want == cur:
		if obs.UrgencyRejected >= 0 {
			r.Tracker.SetUrgencyResult(obj.UID, want, "")
		}
		return 0
	case want == obs.UrgencyRequested || want == obs.UrgencyRejected:
		return 0 // sent (its event is on the way), or refused: no hot loop
	}
	if msg := r.urgencyPrivilegeError(obj, want); msg != "" {
		// Flux would accept it from the owner; the operator did not
		// grant it to this namespace (tenancy.go).
		r.Tracker.SetUrgencyResult(obj.UID, want, msg)
		r.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency", msg)
		return 0
	}
	_, ctl, err := r.routeOf(obj).get()
	if err != nil {
		return r.Options.UnreachableRetry
	}
	id := job.ID(obs.JobID)
	cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
	defer cancel()
	_, err = job.SetUrgency(cctx, ctl, id, want)
	var fe *flux.Error
	switch {
	case err == nil:
		r.Tracker.SetUrgencyResult(obj.UID, want, "")
		logf.FromContext(ctx).Info("urgency changed", "jobid", id.F58(), "from", cur, "to", want)
		r.event(obj, corev1.EventTypeNormal, "UrgencyChanged", "SetUrgency", fmt.Sprintf("Flux job %s urgency %d -> %d", id.F58(), cur, want))
		return 0
	case errors.As(err, &fe) || !isConnectionError(err):
		msg := err.Error()
		if fe != nil && fe.Message != "" {
			msg = fe.Message
		}
		r.Tracker.SetUrgencyResult(obj.UID, want, msg)
		r.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency",
			fmt.Sprintf("Flux refused urgency %d for job %s: %s", want, id.F58(), msg))
		return 0
	}
	return r.Options.UnreachableRetry
}
