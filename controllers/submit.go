package controllers

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Exactly-once submission
//
// A FluxJob's Flux job is named fluxjob-<UID> (attributes.system.job.name).
// Before the submit RPC the controller writes the submission marker (the
// annotation fluxjob.io/submit-attempt, marker.go: the attempt time to the
// nanosecond and the instance) and the cancel finalizer, through one merge
// patch that carries the object's resourceVersion: if the object changed since the controller read it (a
// stale cache that does not show an earlier controller's marker or job
// ID), the API server refuses the write with a conflict and nothing is
// submitted. So a FluxJob without a marker in an object that is current
// has never been submitted, and its submission asks the broker nothing
// before job-ingest.submit: no job-list scan, O(1) broker work, however
// long the instance's history.
//
// With a marker and no job ID, an earlier controller may have submitted
// and died before it recorded the ID. The controller then asks job-list
// for the job by name (job-list.list with the RFC 31 constraint {"name":
// [...]}, which flux-core v0.88.0 src/modules/job-list/match.c compares
// exactly with attributes.system.job.name), bounded: "since" the marker
// less lookupMargin (job-list then stops its scan of the inactive jobs at
// the first one that ended before that, src/modules/job-list/list.c
// get_jobs_from_list; pending and running jobs are always scanned) and at
// most lookupLimit results. A job found is adopted, never submitted again.
//
// job-list learns of jobs asynchronously (from the job-manager's journal),
// so a job submitted a moment ago may not be listed yet. Until AdoptWindow
// has passed since the marker, the controller looks again later. After it,
// before submitting again, it makes job-list catch up (catchUp):
// job-manager.getinfo gives the highest job ID job-manager holds, and
// job-list.list-id of that job waits until job-list has listed it
// (src/modules/job-list/idsync.c) and so every job submitted before it.
// Only a name still missing then is submitted again: a slow job-list
// delays the resubmission instead of duplicating the job. What remains
// is a submit request still inside job-ingest (validation) AdoptWindow
// after the marker. A second controller running at the same time is
// excluded by leader election.
//
// A marker older than Options.PurgeAge whose job cannot be found is not
// submitted again: the job may have run and been purged. The FluxJob ends
// Failed with reason SubmissionUnknown.

const (
	// lookupMargin is subtracted from the marker for job-list's "since":
	// it covers clock skew between the manager and the broker.
	lookupMargin = time.Minute
	// lookupLimit bounds the jobs a lookup returns (one is expected).
	lookupLimit = 8
)

// lookupJob returns the IDs of the jobs named name that were active, or
// ended after since (zero: any time), newest first.
func lookupJob(ctx context.Context, c *flux.Conn, name string, since time.Time, timeout time.Duration) ([]job.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opts := job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(name), MaxEntries: lookupLimit}
	if !since.IsZero() {
		opts.Since = max(float64(since.Add(-lookupMargin).UnixNano())/1e9, 0)
	}
	jobs, err := job.List(ctx, c, opts)
	if err != nil {
		return nil, fmt.Errorf("looking up Flux job %q in job-list: %w", name, err)
	}
	ids := make([]job.ID, 0, len(jobs))
	for _, j := range jobs {
		if j.Name == name || j.Name == "" { // the constraint already matched the name
			ids = append(ids, j.ID)
		}
	}
	return ids, nil
}

// catchUp waits until job-list has listed every job job-manager has
// accepted so far (see above).
func catchUp(ctx context.Context, c *flux.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var info struct {
		MaxJobID job.ID `json:"max_jobid"`
	}
	if err := c.RPC(ctx, "job-manager.getinfo", nil, &info); err != nil {
		if errors.Is(err, syscall.EPERM) {
			// A guest of a private-mode instance may not ask
			// (src/modules/job-manager/job-manager.c): the adopt window
			// alone has to do.
			return nil
		}
		return fmt.Errorf("asking job-manager for its newest job: %w", err)
	}
	if info.MaxJobID == 0 {
		return nil // no job yet
	}
	if _, err := job.ListID(ctx, c, info.MaxJobID, "state"); err != nil && !errors.Is(err, syscall.ENOENT) {
		// ENOENT: that job was purged; job-list had listed it before.
		return fmt.Errorf("waiting for job-list to list job %s: %w", info.MaxJobID.F58(), err)
	}
	return nil
}

// submit runs the exactly-once procedure above for obj.
func (r *FluxJobReconciler) submit(ctx context.Context, obj *fluxjobv1.FluxJob, exec *fluxbridge.Executor, ctl *flux.Conn, deps []job.Dependency) (time.Duration, *failure, error) {
	log := logf.FromContext(ctx)
	spec, fail := buildJobspec(obj, deps...)
	if fail != nil {
		log.Info("jobspec refused before submission", "reason", fail.Reason, "message", fail.Message)
		return 0, fail, nil
	}
	name := fluxJobName(obj)
	instance := r.routeFor(ctx, obj).name
	if at := submitAttempt(obj); at != nil {
		d, fail, id, err := r.findEarlier(ctx, obj, ctl, name, at.Time)
		switch {
		case err != nil || fail != nil || d > 0:
			return d, fail, err
		case id != 0:
			submissionsTotal.WithLabelValues(instance, "adopted").Inc()
			log.Info("found the Flux job of an earlier submission; attaching", "jobid", id.F58())
			return r.attach(ctx, obj, exec, id)
		}
		log.Info("an earlier submission attempt left no Flux job; submitting again")
	}
	if err := r.markSubmitting(ctx, obj); err != nil {
		return 0, nil, err
	}
	urgency := submitUrgency(obj)
	token := r.Tracker.BeginOn(instance, obj.UID, key(obj), true)
	r.Tracker.SetInstance(obj.UID, token, recordedInstanceID(obj))
	start := r.now()
	f, err := exec.Submit(ctx, spec, job.SubmitOptions{Urgency: &urgency, Waitable: obj.Spec.Waitable, Debug: obj.Spec.Debug})
	if err != nil {
		out := classify(0, err)
		if out.Kind == outcomeError {
			// Refused before reaching Flux (bad urgency, say): final.
			submissionsTotal.WithLabelValues(instance, "error").Inc()
		} else {
			out.Kind = outcomeLost // executor broken or shut down: retry after reconnect
		}
		r.Tracker.Finish(obj.UID, token, out)
		return r.Options.UnreachableRetry, nil, nil
	}
	// Names only: environment values may hold secrets and are never logged.
	log.Info("submitted to Flux", "name", name, "urgency", urgency, "env", envNames(obj))
	bindFuture(r.Tracker, instance, obj.UID, token, f, start)
	return 0, nil, nil
}

// findEarlier looks for the job of an earlier submission attempt marked
// at (see above): its ID, or a requeue delay while job-list may still be
// catching up, or a failure when the marker is too old to tell; zero
// everything means there is none and the caller submits.
func (r *FluxJobReconciler) findEarlier(ctx context.Context, obj *fluxjobv1.FluxJob, ctl *flux.Conn, name string, at time.Time) (time.Duration, *failure, job.ID, error) {
	log := logf.FromContext(ctx)
	lookup := func() ([]job.ID, time.Duration, error) {
		ids, err := lookupJob(ctx, ctl, name, at, r.Options.RPCTimeout)
		switch {
		case err == nil:
			if len(ids) > 1 {
				log.Error(nil, "more than one Flux job carries this FluxJob's name; following the newest", "name", name, "jobids", ids)
			}
			return ids, 0, nil
		case isConnectionError(err):
			return nil, r.Options.UnreachableRetry, nil
		}
		return nil, 0, err
	}
	ids, d, err := lookup()
	if err != nil || d > 0 || len(ids) > 0 {
		return d, nil, first(ids), err
	}
	age := r.now().Sub(at)
	if r.Options.PurgeAge > 0 && age > r.Options.PurgeAge {
		msg := fmt.Sprintf("a submission was attempted %s ago, longer than the Flux instance keeps finished jobs (%s), and no Flux job named %s is left: it may have run and been purged, so it is not submitted again",
			age.Round(time.Second), r.Options.PurgeAge, name)
		r.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonSubmissionUnknown, "Submit", msg)
		return 0, &failure{Reason: fluxjobv1.ReasonSubmissionUnknown, Message: msg}, 0, nil
	}
	if wait := r.Options.AdoptWindow - age; wait > 0 {
		log.Info("an earlier submission may not be listed by job-list yet; looking again before submitting", "retryIn", wait)
		return wait, nil, 0, nil
	}
	if err := catchUp(ctx, ctl, r.Options.RPCTimeout); err != nil {
		log.Info("job-list has not caught up with job-manager yet; looking again before submitting", "error", err.Error())
		return r.Options.UnreachableRetry, nil, 0, nil
	}
	ids, d, err = lookup()
	return d, nil, first(ids), err
}

func first(ids []job.ID) job.ID {
	if len(ids) == 0 {
		return 0
	}
	return ids[0]
}

// markSubmitting writes the submission marker (marker.go: the attempt
// time, the FluxInstance the FluxJob belongs to from then on, and that
// instance's identity) and the cancel finalizer, in one object patch,
// before the submit RPC (see above). The patch is optimistic-locked: a
// conflict means the object changed since it was read, and nothing may be
// submitted.
func (r *FluxJobReconciler) markSubmitting(ctx context.Context, obj *fluxjobv1.FluxJob) error {
	rt := r.routeFor(ctx, obj)
	m := submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(r.now()), Instance: rt.name, InstanceID: rt.instanceID()}
	base := obj.DeepCopy()
	if err := m.setOn(obj); err != nil {
		return err
	}
	r.written.begin(obj.UID)
	if err := r.Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		r.written.end(obj.UID)
		*obj = *base
		return fmt.Errorf("recording the submission attempt (nothing submitted): %w", err)
	}
	r.written.add(base.ResourceVersion, obj, r.now())
	return nil
}

// attach starts following an existing Flux job, which the caller proved
// is obj's (by name) in the instance the executor is connected to.
func (r *FluxJobReconciler) attach(ctx context.Context, obj *fluxjobv1.FluxJob, exec *fluxbridge.Executor, id job.ID) (time.Duration, *failure, error) {
	rt := r.routeFor(ctx, obj)
	token := r.Tracker.BeginOn(rt.name, obj.UID, key(obj), false)
	f, err := exec.Attach(ctx, id)
	if err != nil {
		r.Tracker.Finish(obj.UID, token, outcome{Kind: outcomeLost, Message: err.Error()})
		return r.Options.UnreachableRetry, nil, nil
	}
	// The job ID is known: record it at once (the callback does too).
	r.Tracker.SetJobID(obj.UID, token, uint64(id))
	r.Tracker.SetInstance(obj.UID, token, rt.instanceID())
	bindFuture(r.Tracker, rt.name, obj.UID, token, f, time.Time{})
	logf.FromContext(ctx).V(1).Info("attached to Flux job", "jobid", id.F58())
	if obj.Status.JobID == 0 {
		r.event(obj, corev1.EventTypeNormal, "Adopted", "Attach", "found Flux job "+id.F58()+" of an earlier submission")
	}
	return 0, nil, nil
}
