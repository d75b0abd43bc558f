package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Exactly-once submission
//
// A FluxJob's Flux job is named fluxjob-<UID> (attributes.system.job.name).
// Before submitting, the controller asks job-list for jobs of that name
// (job-list.list with the RFC 31 constraint {"name": [...]}; flux-core
// v0.88.0 src/modules/job-list/match.c accepts "name" and compares it
// exactly with the job's name, which src/modules/job-list/job_data.c
// parse_jobspec_job_name reads from attributes.system.job.name). A job
// found is attached, never submitted again.
//
// job-list learns of new jobs asynchronously (from the job-manager's
// journal, then it reads the jobspec), so a job submitted a moment ago may
// not be listed yet. Hence, before calling submit, the controller writes
// status.submitAttemptTime with condition Submitted=Unknown (Submitting);
// if it then dies before it can record the job ID, the next controller
// sees the marker, finds no job, and keeps looking (requeueing) until
// AdoptWindow has passed since the marker before it submits again.
//
// What remains: a duplicate is possible only if the submit request is
// still in flight in job-ingest, or job-list still has not listed the job,
// AdoptWindow (default 10s) after the marker was written — a broker that
// slow. A second controller running at the same time is excluded by
// leader election.

// lookupJob returns the IDs of the jobs named name, newest first.
func lookupJob(ctx context.Context, c *flux.Conn, name string, timeout time.Duration) ([]job.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(name)})
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

// submit runs the exactly-once procedure above for obj.
func (r *FluxJobReconciler) submit(ctx context.Context, obj *fluxjobv1.FluxJob, exec *fluxbridge.Executor, ctl *flux.Conn) (time.Duration, *failure, error) {
	log := logf.FromContext(ctx)
	spec, fail := buildJobspec(obj)
	if fail != nil {
		log.Info("jobspec refused before submission", "reason", fail.Reason, "message", fail.Message)
		return 0, fail, nil
	}
	name := fluxJobName(obj)
	ids, err := lookupJob(ctx, ctl, name, r.Options.RPCTimeout)
	if err != nil {
		if isConnectionError(err) {
			return r.Options.UnreachableRetry, nil, nil
		}
		return 0, nil, err
	}
	if len(ids) > 0 {
		if len(ids) > 1 {
			log.Error(nil, "more than one Flux job carries this FluxJob's name; following the newest", "name", name, "jobids", ids)
		}
		submissionsTotal.WithLabelValues("adopted").Inc()
		log.Info("found the Flux job of an earlier submission; attaching", "jobid", ids[0].F58())
		return r.attach(ctx, obj, exec, ids[0])
	}
	if at := obj.Status.SubmitAttemptTime; at != nil {
		if wait := at.Add(r.Options.AdoptWindow).Sub(r.now()); wait > 0 {
			log.Info("an earlier submission may not be listed by job-list yet; looking again before submitting", "retryIn", wait)
			return wait, nil, nil
		}
		log.Info("an earlier submission attempt left no Flux job; submitting again")
	}
	if err := r.markSubmitting(ctx, obj); err != nil {
		return 0, nil, err
	}
	urgency := int(fluxjobv1.DefaultUrgency)
	if obj.Spec.Urgency != nil {
		urgency = int(*obj.Spec.Urgency)
	}
	token := r.Tracker.Begin(obj.UID, key(obj), true)
	start := r.now()
	f, err := exec.Submit(ctx, spec, job.SubmitOptions{Urgency: &urgency, Waitable: obj.Spec.Waitable, Debug: obj.Spec.Debug})
	if err != nil {
		out := classify(0, err)
		if out.Kind == outcomeError {
			// Refused before reaching Flux (bad urgency, say): final.
			submissionsTotal.WithLabelValues("error").Inc()
		} else {
			out.Kind = outcomeLost // executor broken or shut down: retry after reconnect
		}
		r.Tracker.Finish(obj.UID, token, out)
		return r.Options.UnreachableRetry, nil, nil
	}
	// Names only: environment values may hold secrets and are never logged.
	log.Info("submitted to Flux", "name", name, "urgency", urgency, "env", envNames(obj))
	bindFuture(r.Tracker, obj.UID, token, f, start)
	return 0, nil, nil
}

// markSubmitting writes status.submitAttemptTime and Submitted=Unknown
// (Submitting) before the submit RPC (see above).
func (r *FluxJobReconciler) markSubmitting(ctx context.Context, obj *fluxjobv1.FluxJob) error {
	base := obj.DeepCopy()
	at := metav1.NewTime(r.now().Truncate(time.Second))
	obj.Status.SubmitAttemptTime = &at
	st := computeStatus(obj, statusInput{Reachable: true}, r.now())
	obj.Status = st
	if err := r.Status().Patch(ctx, obj, clientMergeLocked(base)); err != nil {
		*obj = *base
		statusPatchesTotal.WithLabelValues(patchResult(err)).Inc()
		return fmt.Errorf("recording the submission attempt: %w", err)
	}
	statusPatchesTotal.WithLabelValues("success").Inc()
	return nil
}

// attach starts following an existing Flux job.
func (r *FluxJobReconciler) attach(ctx context.Context, obj *fluxjobv1.FluxJob, exec *fluxbridge.Executor, id job.ID) (time.Duration, *failure, error) {
	token := r.Tracker.Begin(obj.UID, key(obj), false)
	f, err := exec.Attach(ctx, id)
	if err != nil {
		r.Tracker.Finish(obj.UID, token, outcome{Kind: outcomeLost, Message: err.Error()})
		return r.Options.UnreachableRetry, nil, nil
	}
	// The job ID is known: record it at once (the callback does too).
	r.Tracker.SetJobID(obj.UID, token, uint64(id))
	bindFuture(r.Tracker, obj.UID, token, f, time.Time{})
	logf.FromContext(ctx).V(1).Info("attached to Flux job", "jobid", id.F58())
	if obj.Status.JobID == 0 {
		r.event(obj, corev1.EventTypeNormal, "Adopted", "Attach", "found Flux job "+id.F58()+" of an earlier submission")
	}
	return 0, nil, nil
}
