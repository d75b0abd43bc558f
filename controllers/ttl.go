package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// Cleanup after the end
//
// spec.ttlSecondsAfterFinished works as batch/v1 Job's (the TTL-after-
// finished controller, pkg/controller/ttlafterfinished): once the FluxJob
// has been finished that long it is deleted, with a precondition on its UID
// and resourceVersion so that an object changed meanwhile (a new TTL, say)
// is looked at again instead. Deleting goes through the usual finalizer
// (a finished job's is released at once). Until the deadline the reconcile
// is requeued for it; nothing is written.

// Deleting a FluxJob whose TTL expired.
// +kubebuilder:rbac:groups=fluxjob.io,resources=fluxjobs,verbs=delete

// finishedAt is when obj finished: status.completionTime, or, for a
// FluxJob that ended without a Flux job (rejected, say), when its Finished
// (or Failed) condition became True. Zero if unknown.
func finishedAt(obj *fluxjobv1.FluxJob) time.Time {
	if t := obj.Status.CompletionTime; t != nil {
		return t.Time
	}
	for _, typ := range []string{fluxjobv1.ConditionFinished, fluxjobv1.ConditionFailed, fluxjobv1.ConditionSucceeded} {
		if c := meta.FindStatusCondition(obj.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// afterFinished is the reconcile of a FluxJob whose status is final:
// reap its waitable Flux job, then apply ttlSecondsAfterFinished.
func (r *FluxJobReconciler) afterFinished(ctx context.Context, obj *fluxjobv1.FluxJob, m marker) (ctrl.Result, error) {
	requeue, err := reap(ctx, r.w, r.routeOf(ctx, obj, m), obj, r.Options.RPCTimeout, r.Options.UnreachableRetry)
	if err != nil {
		return ctrl.Result{RequeueAfter: requeue}, err
	}
	res, err := expire(ctx, r.w, obj)
	res.RequeueAfter = minRequeue(res.RequeueAfter, requeue)
	return res, err
}

// expire deletes a finished obj whose spec.ttlSecondsAfterFinished
// has passed, or returns a requeue at the deadline. Without a TTL it does
// nothing.
func expire(ctx context.Context, w *writer, obj *fluxjobv1.FluxJob) (ctrl.Result, error) {
	ttl := obj.Spec.TTLSecondsAfterFinished
	if ttl == nil || !obj.Status.Phase.IsTerminal() || !obj.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	end := finishedAt(obj)
	if end.IsZero() {
		end = obj.CreationTimestamp.Time
	}
	expiry := end.Add(time.Duration(*ttl) * time.Second)
	if left := expiry.Sub(w.now()); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	uid, rv := obj.UID, obj.ResourceVersion
	err := w.Delete(ctx, obj, client.Preconditions{UID: &uid, ResourceVersion: &rv}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	switch {
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err):
		// Changed since the cache read: look again soon.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("deleting FluxJob after ttlSecondsAfterFinished: %w", err)
	}
	logf.FromContext(ctx).Info("deleted: ttlSecondsAfterFinished passed", "ttlSeconds", *ttl, "finished", end)
	w.event(obj, corev1.EventTypeNormal, "Expired", "Delete",
		fmt.Sprintf("deleted %ds after it finished (spec.ttlSecondsAfterFinished)", *ttl))
	return ctrl.Result{}, nil
}
