package controllers

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// ensureFinalizer adds the cancel finalizer to a FluxJob that has a Flux
// job but lost it (a submission adds it with the marker, submit.go).
func ensureFinalizer(ctx context.Context, w *writer, obj *fluxjobv1.FluxJob) error {
	if controllerutil.ContainsFinalizer(obj, fluxjobv1.CancelFinalizer) {
		return nil
	}
	base := obj.DeepCopy()
	controllerutil.AddFinalizer(obj, fluxjobv1.CancelFinalizer)
	if err := w.patch(ctx, obj, base, false); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	return nil
}

// jobEnded reports whether the view shows the Flux job over: its eventlog
// has finish or clean, or the future failed for good without a job
// (rejected jobspec, job not found, another final error).
func jobEnded(v broker.View) bool {
	k := v.Outcome.Kind
	return v.Summary().Ended() || k.Final() && k != broker.OutcomeExited && k != broker.OutcomeException
}

// releaseFinalizer removes the cancel finalizer from obj, then forgets
// what forget holds of it (the tracker's view, an array's run).
func (r *FluxJobReconciler) releaseFinalizer(ctx context.Context, obj *fluxjobv1.FluxJob, forget func(types.UID)) (ctrl.Result, error) {
	base := obj.DeepCopy()
	controllerutil.RemoveFinalizer(obj, fluxjobv1.CancelFinalizer)
	if err := r.w.patch(ctx, obj, base, false); err != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer: %w", err)
	}
	forget(obj.UID)
	logf.FromContext(ctx).Info("finalizer removed")
	return ctrl.Result{}, nil
}

// finalize handles a FluxJob marked for deletion: a Flux job that has not
// ended is cancelled and waited for, at most until CancelTimeout after the
// deletion timestamp; then the finalizer is removed (with a Warning event
// if the job was not seen to end).
func (r *FluxJobReconciler) finalize(ctx context.Context, obj *fluxjobv1.FluxJob, m marker) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(obj, fluxjobv1.CancelFinalizer) {
		r.Tracker.Forget(obj.UID)
		return ctrl.Result{}, nil
	}
	log := logf.FromContext(ctx)
	release := func() (ctrl.Result, error) { return r.releaseFinalizer(ctx, obj, r.Tracker.Forget) }
	rt := r.routeOf(ctx, obj, m)
	view, tracked := r.Tracker.Get(obj.UID)
	id := job.ID(obj.Status.JobID)
	if id == 0 && tracked && view.HasJobID {
		id = job.ID(view.JobID)
	}
	if obj.Status.Phase.IsTerminal() || (tracked && jobEnded(view)) {
		collectEnded(ctx, rt, obj, id, r.Options.RPCTimeout)
		return release()
	}
	deadline := obj.DeletionTimestamp.Add(r.Options.CancelTimeout)
	now := r.now()
	giveUp := func(why string) (ctrl.Result, error) {
		log.Info("removing the finalizer without seeing the Flux job end", "why", why)
		r.w.event(obj, corev1.EventTypeWarning, "CancelTimeout", "Cancel", why)
		return release()
	}
	wait := func(d time.Duration) (ctrl.Result, error) {
		if left := deadline.Sub(now); left < d {
			d = left + 10*time.Millisecond
		}
		return ctrl.Result{RequeueAfter: d}, nil
	}
	if _, _, err := rt.Get(); err != nil {
		if now.After(deadline) {
			return giveUp("the Flux broker is unreachable; the Flux job (if any) may still be running: " + err.Error())
		}
		return wait(r.Options.UnreachableRetry)
	}
	if id == 0 {
		if tracked && view.Outcome.Kind == broker.OutcomeNone {
			// Submission in flight: its job ID comes soon.
			if now.After(deadline) {
				return giveUp("the Flux job's ID never arrived; it may still be running")
			}
			return wait(500 * time.Millisecond)
		}
		if !m.attempted() {
			return release() // never submitted
		}
		settled := now.After(m.At.Add(r.Options.AdoptWindow)) || now.After(deadline)
		ids, err := lookupCaughtUp(ctx, rt, r.Options, attemptName(obj), m.After, settled)
		switch {
		case err != nil && now.After(deadline):
			return giveUp("cannot look the Flux job up: " + err.Error())
		case err != nil:
			log.Info("cannot look the Flux job up yet; retrying before releasing the FluxJob", "error", err.Error())
			return wait(r.Options.UnreachableRetry)
		case len(ids) > 0:
			id = ids[0]
		case settled:
			return release() // job-list caught up: the submission never reached Flux
		default:
			return wait(time.Second)
		}
	}
	// Follow the job so that its end is seen, once it is proven to be
	// this FluxJob's: a job ID from a replaced instance may name someone
	// else's job, which must never be cancelled.
	if !tracked || needsNewFuture(view, now, r.Options.Resync) {
		d, fail, _ := r.reattach(ctx, obj, m, rt, id)
		switch {
		case fail != nil:
			log.Info("not cancelling: the Flux job at the FluxJob's job ID is not its own", "jobid", id.F58(), "reason", fail.Reason)
			return release()
		case d > 0 && now.After(deadline):
			return giveUp(fmt.Sprintf("cannot check Flux job %s before cancelling it", id))
		case d > 0:
			return wait(d)
		}
		view, _ = r.Tracker.Get(obj.UID)
	}
	if view.CancelRequested.IsZero() {
		reason := fmt.Sprintf("FluxJob %s/%s deleted", obj.Namespace, obj.Name)
		err := r.Tracker.Cancel(ctx, rt, obj.UID, key(obj), id, reason, r.Options.RPCTimeout)
		var fe *flux.Error
		switch {
		case err == nil:
			log.Info("cancelling the Flux job", "jobid", id.F58())
			r.w.event(obj, corev1.EventTypeNormal, "Cancelling", "Cancel", "cancelling Flux job "+id.F58())
		case errors.Is(err, syscall.ENOENT):
			return release() // "job is inactive" or unknown: nothing left to cancel
		case errors.As(err, &fe):
			// The broker refused (EPERM, ...): cancelling again will not help.
			r.w.event(obj, corev1.EventTypeWarning, "CancelFailed", "Cancel", fmt.Sprintf("Flux refused to cancel job %s: %s", id.F58(), fe.Message))
			return release()
		default:
			log.Info("cancel failed; retrying", "jobid", id.F58(), "error", err.Error())
			return ctrl.Result{RequeueAfter: r.Options.UnreachableRetry}, nil
		}
	}
	if now.After(deadline) {
		return giveUp(fmt.Sprintf("Flux job %s did not end within %s of the deletion", id, r.Options.CancelTimeout))
	}
	return wait(2 * time.Second)
}

// lookupCaughtUp looks up the Flux jobs named name of a submission
// attempted after the job anchor (broker.Lookup). When none is listed
// and settled (the adopt window or the deletion's deadline is over), it
// makes job-list catch up with job-manager first and looks again: the barrier a resubmission passes
// (submit.go), so that a job-list that lists jobs late does not make a
// deleted FluxJob lose its Flux job uncancelled. An error means nothing
// may be concluded yet.
func lookupCaughtUp(ctx context.Context, rt broker.Route, o Options, name string, anchor job.ID, settled bool) ([]job.ID, error) {
	ids, err := broker.LookupOn(ctx, rt, name, anchor, o.RPCTimeout)
	if err != nil || len(ids) > 0 || !settled {
		return ids, err
	}
	if err := broker.CatchUpOn(ctx, rt, o.RPCTimeout); err != nil {
		return nil, fmt.Errorf("waiting for job-list to catch up with job-manager: %w", err)
	}
	return broker.LookupOn(ctx, rt, name, anchor, o.RPCTimeout)
}
