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
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// Exactly-once submission
//
// A FluxJob's Flux job is named fluxjob-<UID> (attributes.system.job.name;
// a retry's fluxjob-<UID>.<attempt>, retry.go).
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
// for the job by name, bounded by the marker's anchor: a job ID seen on
// the instance before the marker, whose submission time is on the
// broker's clock, so that no clock skew between manager and broker can
// hide the job (broker.Lookup). A job found is adopted, never submitted
// again.
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

// track makes sure a future follows the FluxJob's Flux job: nothing to do
// while one does (or its outcome is final); otherwise attach to a known
// job ID (after proving it is this FluxJob's), or submit exactly once with
// the RFC 26 dependencies deps. It returns a requeue delay when it has to
// wait (broker unreachable, job-list catching up), or a failure the
// controller decided itself. A submission updates *m.
func (r *FluxJobReconciler) track(ctx context.Context, obj *fluxjobv1.FluxJob, m *marker, rt broker.Route, deps []job.Dependency) (time.Duration, *failure, error) {
	view, ok := r.Tracker.Get(obj.UID)
	if ok && !needsNewFuture(view, r.now(), r.Options.Resync) {
		return 0, nil, nil
	}
	if _, _, err := rt.Get(); err != nil {
		if _, unreachable := rt.State(); unreachable == "" {
			return 200 * time.Millisecond, nil, nil // still connecting
		}
		return r.Options.UnreachableRetry, nil, nil
	}
	var id job.ID
	switch {
	case obj.Status.JobID != 0:
		id = job.ID(obj.Status.JobID)
	case ok && view.HasJobID:
		id = job.ID(view.JobID)
	}
	if id != 0 {
		if err := ensureFinalizer(ctx, r.w, obj); err != nil {
			return 0, nil, err
		}
		return r.reattach(ctx, obj, *m, rt, id)
	}
	log := logf.FromContext(ctx)
	name := attemptName(obj)
	spec, jerr := jobspec.BuildNamed(obj, name, deps...)
	if jerr != nil {
		log.Info("jobspec refused before submission", "reason", jerr.Reason, "message", jerr.Message)
		return 0, &failure{Reason: jerr.Reason, Message: jerr.Message}, nil
	}
	if m.attempted() {
		d, fail, id, err := findEarlier(ctx, r.w, r.Options, obj, rt, name, *m)
		switch {
		case err != nil || fail != nil || d > 0:
			return d, fail, err
		case id != 0:
			log.Info("found the Flux job of an earlier submission; attaching", "jobid", id.F58())
			return attach(ctx, r.Tracker, r.w, r.Options, obj, rt, id, true)
		}
		log.Info("an earlier submission attempt left no Flux job; submitting again")
	}
	// The marker and the finalizer, in one locked patch, before the
	// submit RPC: a conflict means the object changed since it was read,
	// and nothing may be submitted.
	after, err := r.Tracker.Anchor(ctx, rt, r.Options.RPCTimeout)
	switch {
	case err != nil && broker.IsConnectionError(err):
		return r.Options.UnreachableRetry, nil, nil
	case err != nil:
		log.Info("no anchor job for the submission marker; a lookup after a crash will scan all of job-list", "error", err.Error())
	}
	sm := submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(r.now()), Instance: rt.Name, InstanceID: rt.InstanceID(), After: after, Attempt: attemptOf(obj)}
	base := obj.DeepCopy()
	if err := sm.setOn(obj); err != nil {
		return 0, nil, err
	}
	if err := r.w.patch(ctx, obj, base, false); err != nil {
		return 0, nil, fmt.Errorf("recording the submission attempt (nothing submitted): %w", err)
	}
	m.merge(sm)
	m.Instance, m.InstanceID = sm.Instance, sm.InstanceID // where this attempt went
	urgency := submitUrgency(obj)
	opts := job.SubmitOptions{Urgency: &urgency, Waitable: obj.Spec.Waitable, Debug: obj.Spec.Debug}
	if err := r.Tracker.Submit(ctx, rt, obj.UID, key(obj), spec, opts, m.InstanceID); err != nil {
		log.Info("the executor did not take the job; retrying", "error", err.Error())
		return r.Options.UnreachableRetry, nil, nil
	}
	// Names only: environment values may hold secrets and are never logged.
	log.Info("submitted to Flux", "name", name, "urgency", urgency, "env", jobspec.EnvNames(obj))
	return 0, nil, nil
}

// needsNewFuture reports whether the tracked future can no longer tell us
// anything: it lost its connection, was aborted, or ended on a fatal
// exception but has been silent longer than resync without the job's
// clean or finish event (its eventlog watch may have died with a
// connection).
func needsNewFuture(v broker.View, now time.Time, resync time.Duration) bool {
	switch v.Outcome.Kind {
	case broker.OutcomeLost, broker.OutcomeAborted:
		return true
	case broker.OutcomeException:
		return !v.Summary().Ended() && now.Sub(v.LastSeen) > resync
	}
	return false
}

// findEarlier looks for the job of the earlier submission attempt m
// records (see above): its ID, or a requeue delay while job-list may
// still be catching up, or a failure when the marker is too old to tell;
// zero everything means there is none and the caller submits. The lookup
// is bounded by m's anchor job (broker clock), the adopt window and the
// purge age by m's time (manager clock).
func findEarlier(ctx context.Context, w *writer, o Options, obj *fluxjobv1.FluxJob, rt broker.Route, name string, m marker) (time.Duration, *failure, job.ID, error) {
	log := logf.FromContext(ctx)
	at := m.At.Time
	lookup := func() ([]job.ID, time.Duration, error) {
		ids, err := broker.LookupOn(ctx, rt, name, m.After, o.RPCTimeout)
		switch {
		case err == nil:
			if len(ids) > 1 {
				log.Error(nil, "more than one Flux job carries this FluxJob's name; following the newest", "name", name, "jobids", ids)
			}
			return ids, 0, nil
		case broker.IsConnectionError(err):
			return nil, o.UnreachableRetry, nil
		}
		return nil, 0, err
	}
	ids, d, err := lookup()
	if err != nil || d > 0 || len(ids) > 0 {
		return d, nil, first(ids), err
	}
	age := w.now().Sub(at)
	if o.PurgeAge > 0 && age > o.PurgeAge {
		msg := fmt.Sprintf("a submission was attempted %s ago, longer than the Flux instance keeps finished jobs (%s), and no Flux job named %s is left: it may have run and been purged, so it is not submitted again",
			age.Round(time.Second), o.PurgeAge, name)
		w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonSubmissionUnknown, "Submit", msg)
		return 0, &failure{Reason: fluxjobv1.ReasonSubmissionUnknown, Message: msg}, 0, nil
	}
	if wait := o.AdoptWindow - age; wait > 0 {
		log.Info("an earlier submission may not be listed by job-list yet; looking again before submitting", "retryIn", wait)
		return wait, nil, 0, nil
	}
	if err := broker.CatchUpOn(ctx, rt, o.RPCTimeout); err != nil {
		log.Info("job-list has not caught up with job-manager yet; looking again before submitting", "error", err.Error())
		return o.UnreachableRetry, nil, 0, nil
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

// attach starts following an existing Flux job, which the caller proved
// is obj's (by name) in rt's instance. adopted: found by name after an
// earlier submission attempt.
func attach(ctx context.Context, t *broker.Tracker, w *writer, o Options, obj *fluxjobv1.FluxJob, rt broker.Route, id job.ID, adopted bool) (time.Duration, *failure, error) {
	if err := t.Attach(ctx, rt, obj.UID, key(obj), id, adopted); err != nil {
		return o.UnreachableRetry, nil, nil
	}
	logf.FromContext(ctx).V(1).Info("attached to Flux job", "jobid", id.F58())
	if obj.Status.JobID == 0 {
		w.event(obj, corev1.EventTypeNormal, "Adopted", "Attach", "found Flux job "+id.F58()+" of an earlier submission")
	}
	return 0, nil, nil
}

// reattach follows the job at id after proving it is obj's
// (broker.VerifyJob: a job ID is trusted only with its name); if it is
// not, the FluxJob fails with the reason missingJob gives and nothing is
// attached.
func (r *FluxJobReconciler) reattach(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, rt broker.Route, id job.ID) (time.Duration, *failure, error) {
	check, other, err := broker.Verify(ctx, rt, id, attemptName(obj), r.Options.RPCTimeout)
	if err != nil {
		logf.FromContext(ctx).Info("cannot check the Flux job before re-attaching; retrying", "jobid", id.F58(), "error", err.Error())
		return r.Options.UnreachableRetry, nil, nil
	}
	if check == broker.JobOurs {
		return attach(ctx, r.Tracker, r.w, r.Options, obj, rt, id, false)
	}
	f := missingJob(id, check, m.InstanceID, rt.InstanceID())
	logf.FromContext(ctx).Info("the FluxJob's Flux job is not at its job ID", "jobid", id.F58(), "reason", f.Reason,
		"otherName", other, "recordedInstance", m.InstanceID, "currentInstance", rt.InstanceID())
	r.w.event(obj, corev1.EventTypeWarning, f.Reason, "Attach", f.Message)
	return 0, f, nil
}

// missingJob is the failure of a FluxJob whose job is not at its ID, given
// the instance identities recorded and current.
func missingJob(id job.ID, check broker.JobCheck, recorded, current string) *failure {
	switch {
	case check == broker.JobOther:
		// The other job's name stays in the log: it is not this
		// FluxJob's data.
		return &failure{Reason: fluxjobv1.ReasonInstanceReplaced, Message: fmt.Sprintf(
			"Flux job %s of this FluxJob is gone: the Flux instance was replaced and the new one gave that ID to another job, which is neither followed nor cancelled",
			id)}
	case recorded != "" && current != "" && recorded != current:
		return &failure{Reason: fluxjobv1.ReasonInstanceReplaced, Message: fmt.Sprintf(
			"Flux job %s is gone: it ran in Flux instance %s, which was replaced by instance %s", id, recorded, current)}
	}
	return &failure{Reason: fluxjobv1.ReasonJobNotFound, Message: fmt.Sprintf(
		"Flux job %s not found in the Flux instance (purged after it ended, or lost: was the Flux instance restarted?)", id)}
}
