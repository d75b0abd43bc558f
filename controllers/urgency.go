package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// syncUrgency applies a changed spec.urgency to the Flux job
// (job-manager.urgency). A value Flux refuses (EPERM for a guest above 16,
// EINVAL once resources are allocated) is recorded in the tracker, shown
// as condition UrgencyApplied=False with the broker's message and a
// Warning event, and not retried until spec.urgency changes again. It
// returns a requeue delay when the broker could not be reached.
func (r *FluxJobReconciler) syncUrgency(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, v broker.View) time.Duration {
	if obj.Spec.Urgency == nil || !v.HasJobID || v.Outcome.Kind != broker.OutcomeNone || jobEnded(v) {
		return 0
	}
	sum := v.Summary()
	want := desiredUrgency(obj, sum)
	cur := sum.Urgency
	switch {
	case cur < 0:
		return 0 // the submit event will poke us
	case want == cur:
		if v.UrgencyRejected >= 0 {
			r.Tracker.SetUrgencyResult(obj.UID, want, "")
		}
		return 0
	case want == v.UrgencyRequested || want == v.UrgencyRejected:
		return 0 // sent (its event is on the way), or refused: no hot loop
	}
	id := job.ID(v.JobID)
	if msg := tenancyOf(r.Options).urgencyError(obj, want); msg != "" {
		// Flux would accept it from the owner; the operator did not
		// grant it to this namespace (tenancy.go).
		r.Tracker.SetUrgencyResult(obj.UID, want, msg)
		r.w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency", msg)
		return 0
	}
	refused, err := r.Tracker.SetUrgency(ctx, rt, obj.UID, id, want, r.Options.RPCTimeout)
	switch {
	case err != nil:
		return r.Options.UnreachableRetry
	case refused != "":
		r.w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency",
			fmt.Sprintf("Flux refused urgency %d for job %s: %s", want, id.F58(), refused))
		return 0
	}
	logf.FromContext(ctx).Info("urgency changed", "jobid", id.F58(), "from", cur, "to", want)
	r.w.event(obj, corev1.EventTypeNormal, "UrgencyChanged", "SetUrgency", fmt.Sprintf("Flux job %s urgency %d -> %d", id.F58(), cur, want))
	return 0
}
