package controllers

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// ensureFinalizer adds the cancel finalizer to a FluxJob that has a Flux
// job but lost it (a submission adds it with the marker, submit.go).
func (r *FluxJobReconciler) ensureFinalizer(ctx context.Context, obj *fluxjobv1.FluxJob) error {
	if controllerutil.ContainsFinalizer(obj, fluxjobv1.CancelFinalizer) {
		return nil
	}
	base := obj.DeepCopy()
	controllerutil.AddFinalizer(obj, fluxjobv1.CancelFinalizer)
	r.written.begin(obj.UID)
	if err := r.Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		r.written.end(obj.UID)
		*obj = *base
		return fmt.Errorf("adding finalizer: %w", err)
	}
	r.written.add(base.ResourceVersion, obj, r.now())
	return nil
}

// removeFinalizer lets the object go and forgets it.
func (r *FluxJobReconciler) removeFinalizer(ctx context.Context, obj *fluxjobv1.FluxJob) (ctrl.Result, error) {
	base := obj.DeepCopy()
	controllerutil.RemoveFinalizer(obj, fluxjobv1.CancelFinalizer)
	if err := r.Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		*obj = *base
		return ctrl.Result{}, fmt.Errorf("removing finalizer: %w", err)
	}
	r.Tracker.Forget(obj.UID)
	logf.FromContext(ctx).Info("finalizer removed")
	return ctrl.Result{}, nil
}

// jobEnded reports whether the observation shows the Flux job over: its
// eventlog has finish or clean, or the future failed for good without a
// job (rejected jobspec, job not found, another final error).
func jobEnded(obs observation) bool {
	for _, ev := range obs.Events {
		if ev.Name == "finish" || ev.Name == "clean" {
			return true
		}
	}
	k := obs.Outcome.Kind
	return k.final() && k != outcomeExited && k != outcomeException
}

// finalize handles a FluxJob marked for deletion: a Flux job that has not
// ended is cancelled (job.Cancel) and waited for, at most until
// CancelTimeout after the deletion timestamp; then the finalizer is
// removed (with a Warning event if the job was not seen to end).
func (r *FluxJobReconciler) finalize(ctx context.Context, obj *fluxjobv1.FluxJob) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(obj, fluxjobv1.CancelFinalizer) {
		r.Tracker.Forget(obj.UID)
		return ctrl.Result{}, nil
	}
	log := logf.FromContext(ctx)
	obs, tracked := r.Tracker.Get(obj.UID)
	if obj.Status.Phase.IsTerminal() || (tracked && jobEnded(obs)) {
		id := job.ID(obj.Status.JobID)
		if id == 0 && tracked && obs.HasJobID {
			id = job.ID(obs.JobID)
		}
		r.collectEnded(ctx, obj, id)
		return r.removeFinalizer(ctx, obj)
	}
	deadline := obj.DeletionTimestamp.Add(r.Options.CancelTimeout)
	now := r.now()
	giveUp := func(why string) (ctrl.Result, error) {
		log.Info("removing the finalizer without seeing the Flux job end", "why", why)
		r.event(obj, corev1.EventTypeWarning, "CancelTimeout", "Cancel", why)
		return r.removeFinalizer(ctx, obj)
	}
	wait := func(d time.Duration) (ctrl.Result, error) {
		if left := deadline.Sub(now); left < d {
			d = left + 10*time.Millisecond
		}
		return ctrl.Result{RequeueAfter: d}, nil
	}
	rt := r.routeOf(obj)
	ctx = withRoute(ctx, rt)
	exec, ctl, err := rt.get()
	if err != nil {
		if now.After(deadline) {
			return giveUp("the Flux broker is unreachable; the Flux job (if any) may still be running: " + err.Error())
		}
		return wait(r.Options.UnreachableRetry)
	}
	id := job.ID(obj.Status.JobID)
	if id == 0 && tracked && obs.HasJobID {
		id = job.ID(obs.JobID)
	}
	if id == 0 {
		if tracked && obs.Outcome.Kind == outcomeNone {
			// Submission in flight: its job ID comes soon.
			if now.After(deadline) {
				return giveUp("the Flux job's ID never arrived; it may still be running")
			}
			return wait(500 * time.Millisecond)
		}
		at := submitAttempt(obj)
		if at == nil {
			return r.removeFinalizer(ctx, obj) // never submitted
		}
		ids, err := lookupJob(ctx, ctl, fluxJobName(obj), at.Time, r.Options.RPCTimeout)
		switch {
		case err != nil && now.After(deadline):
			return giveUp("cannot look the Flux job up: " + err.Error())
		case err != nil:
			return wait(r.Options.UnreachableRetry)
		case len(ids) > 0:
			id = ids[0]
		case now.After(at.Add(r.Options.AdoptWindow)) || now.After(deadline):
			return r.removeFinalizer(ctx, obj) // the submission never reached Flux
		default:
			return wait(time.Second)
		}
	}
	// Follow the job so that its end is seen, once it is proven to be
	// this FluxJob's: a job ID from a replaced instance may name someone
	// else's job, which must never be cancelled (identity.go).
	if !tracked || r.needsNewFuture(obs) {
		d, fail, _ := r.reattach(ctx, obj, exec, ctl, id)
		switch {
		case fail != nil:
			log.Info("not cancelling: the Flux job at the FluxJob's job ID is not its own", "jobid", id.F58(), "reason", fail.Reason)
			return r.removeFinalizer(ctx, obj)
		case d > 0 && now.After(deadline):
			return giveUp(fmt.Sprintf("cannot check Flux job %s before cancelling it", id))
		case d > 0:
			return wait(d)
		}
		obs, _ = r.Tracker.Get(obj.UID)
	}
	if obs.CancelRequested.IsZero() {
		if done, res, err := r.cancel(ctx, obj, ctl, id); done {
			return res, err
		}
	}
	if now.After(deadline) {
		return giveUp(fmt.Sprintf("Flux job %s did not end within %s of the deletion", id, r.Options.CancelTimeout))
	}
	return wait(2 * time.Second)
}

// cancel asks Flux to cancel job id. done is true when finalize should
// return res, err right away.
func (r *FluxJobReconciler) cancel(ctx context.Context, obj *fluxjobv1.FluxJob, ctl *flux.Conn, id job.ID) (done bool, res ctrl.Result, err error) {
	log := logf.FromContext(ctx)
	cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
	defer cancel()
	reason := fmt.Sprintf("FluxJob %s/%s deleted", obj.Namespace, obj.Name)
	cerr := job.Cancel(cctx, ctl, id, reason)
	var fe *flux.Error
	switch {
	case cerr == nil:
		r.Tracker.MarkCancelRequested(obj.UID, key(obj))
		log.Info("cancelling the Flux job", "jobid", id.F58())
		r.event(obj, corev1.EventTypeNormal, "Cancelling", "Cancel", "cancelling Flux job "+id.F58())
		return false, ctrl.Result{}, nil
	case errors.Is(cerr, syscall.ENOENT):
		// "job is inactive" or unknown: nothing left to cancel.
		res, err := r.removeFinalizer(ctx, obj)
		return true, res, err
	case errors.As(cerr, &fe):
		// The broker refused (EPERM, ...): cancelling again will not help.
		r.event(obj, corev1.EventTypeWarning, "CancelFailed", "Cancel", fmt.Sprintf("Flux refused to cancel job %s: %s", id.F58(), fe.Message))
		res, err := r.removeFinalizer(ctx, obj)
		return true, res, err
	default:
		log.Info("cancel failed; retrying", "jobid", id.F58(), "error", cerr.Error())
		return true, ctrl.Result{RequeueAfter: r.Options.UnreachableRetry}, nil
	}
}
