package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// The batch options (spec.suspend, spec.dependsOn, spec.beginTime) meet the
// reconciler in two places: beforeSubmit, which decides whether a FluxJob
// may be submitted now and with which dependencies, and setBatchConditions,
// which adds their conditions (and Finished) to the status. A FluxJob that
// uses none of them costs one comparison in each and no API request.

// usesBatchHold reports whether obj has anything that can hold its
// submission.
func usesBatchHold(obj *fluxjobv1.FluxJob) bool {
	return obj.Spec.Suspend || len(obj.Spec.DependsOn) > 0 || obj.Spec.BeginTime != nil
}

// beforeSubmit returns the RFC 26 dependencies to submit obj with, or why
// it must not be submitted yet (a hold), or a failure when it never can
// be. A FluxJob that Flux already has, or that the controller has started
// to submit, is not held (its submission may have reached Flux), except
// that its dependencies must still resolve should the submission have to
// be repeated.
func (r *FluxJobReconciler) beforeSubmit(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, rt broker.Route) ([]job.Dependency, *hold, *failure, error) {
	if !usesBatchHold(obj) || obj.Status.JobID != 0 {
		return nil, nil, nil, nil
	}
	if v, ok := r.Tracker.Get(obj.UID); ok && (v.HasJobID || !v.Outcome.Kind.Final() && !v.SubmittedAt.IsZero()) {
		return nil, nil, nil, nil // submitted by this process
	}
	if obj.Spec.Suspend && !m.attempted() {
		return nil, suspendHold(), nil, nil
	}
	if len(obj.Spec.DependsOn) == 0 {
		return jobspec.BeginTime(obj), nil, nil, nil
	}
	return resolveDependencies(ctx, r.Client, obj, rt.Name)
}

// holdStatus writes the status of a FluxJob that is held (h) or failed
// before submission (fail), with an event when the hold's reason changes.
func (r *FluxJobReconciler) holdStatus(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, rt broker.Route, adm *admission, h *hold, fail *failure) (ctrl.Result, error) {
	in := statusInput{Marker: m, Hold: h, Failure: fail, Admission: adm}
	in.reachability(rt)
	if h != nil && h.Reason != fluxjobv1.ReasonSuspended {
		if c := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionDependenciesReady); c == nil || c.Reason != h.Reason {
			typ := corev1.EventTypeNormal
			if h.Reason == fluxjobv1.ReasonDependencyNotFound {
				typ = corev1.EventTypeWarning
			}
			r.w.event(obj, typ, h.Reason, "Submit", h.Message)
		}
	}
	if err := r.w.writeStatus(ctx, obj, computeStatus(obj, in, r.now())); err != nil {
		return ctrl.Result{}, err
	}
	if obj.Status.Phase.IsTerminal() {
		r.Tracker.Forget(obj.UID)
		return expire(ctx, r.w, obj)
	}
	// The dependencies' watch wakes a waiting FluxJob, a spec change a
	// suspended one; the resync is the safety net.
	return ctrl.Result{RequeueAfter: r.Options.Resync}, nil
}

// setBatchConditions sets Finished on every FluxJob, and DependenciesReady
// and Suspended on those that use dependsOn or suspend.
func setBatchConditions(st *fluxjobv1.FluxJobStatus, spec *fluxjobv1.FluxJobSpec, js jobState, in statusInput, gen int64, now metav1.Time) {
	set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: fluxjobv1.Clip(msg, 32768),
			ObservedGeneration: gen, LastTransitionTime: now,
		})
	}
	if js.phase.IsTerminal() {
		set(fluxjobv1.ConditionFinished, metav1.ConditionTrue, js.reason, js.message)
	} else {
		set(fluxjobv1.ConditionFinished, metav1.ConditionFalse, fluxjobv1.ReasonInProgress, js.message)
	}

	switch {
	case len(spec.DependsOn) == 0:
		meta.RemoveStatusCondition(&st.Conditions, fluxjobv1.ConditionDependenciesReady)
	case in.Hold != nil && in.Hold.Reason != fluxjobv1.ReasonSuspended:
		set(fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, in.Hold.Reason, in.Hold.Message)
	case js.reason == fluxjobv1.ReasonDependencyFailed || js.reason == fluxjobv1.ReasonDependencyCycle:
		set(fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, js.reason, js.message)
	case st.JobID != 0 || st.SubmitAttemptTime != nil:
		set(fluxjobv1.ConditionDependenciesReady, metav1.ConditionTrue, fluxjobv1.ReasonDependenciesSubmitted,
			"Submitted to Flux with its dependencies; Flux holds the job until they are met")
	}

	switch {
	case !spec.Suspend || js.phase.IsTerminal():
		meta.RemoveStatusCondition(&st.Conditions, fluxjobv1.ConditionSuspended)
	case js.phase == fluxjobv1.PhaseSuspended:
		set(fluxjobv1.ConditionSuspended, metav1.ConditionTrue, fluxjobv1.ReasonSuspended, js.message)
	default:
		set(fluxjobv1.ConditionSuspended, metav1.ConditionFalse, fluxjobv1.ReasonAlreadyStarted,
			"spec.suspend has no effect on a job that has started")
	}
}

// finishedCondition adds Finished to a terminal status written before
// the condition existed (from its Failed or Succeeded condition), so that
// `kubectl wait --for=condition=Finished` works for it too.
func finishedCondition(st *fluxjobv1.FluxJobStatus, gen int64, now time.Time) {
	if meta.FindStatusCondition(st.Conditions, fluxjobv1.ConditionFinished) != nil {
		return
	}
	from := meta.FindStatusCondition(st.Conditions, fluxjobv1.ConditionFailed)
	if st.Phase == fluxjobv1.PhaseSucceeded || from == nil || from.Status != metav1.ConditionTrue {
		from = meta.FindStatusCondition(st.Conditions, fluxjobv1.ConditionSucceeded)
	}
	c := metav1.Condition{Type: fluxjobv1.ConditionFinished, Status: metav1.ConditionTrue, Reason: string(st.Phase),
		Message: st.Message, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now.Truncate(time.Second))}
	if from != nil {
		c.Reason, c.LastTransitionTime = from.Reason, from.LastTransitionTime
	}
	meta.SetStatusCondition(&st.Conditions, c)
}
