package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/fluxjob/fluxjob-operator/fluxbridge/kvs"
)

// Instance identity
//
// A Flux job ID is unique only within one Flux instance's history. A new
// instance (a new pod, a new state directory) starts its job-ID generator
// over: job-ingest seeds its FLUID generator with the timestamp of
// job-manager's max_jobid plus one, and max_jobid is 0 in a new instance
// (flux-core v0.88.0 src/modules/job-ingest/job-ingest.c,
// src/common/libutil/fluid.c), so its first IDs are the same small numbers
// every new instance hands out. A status.jobID from the old instance may
// therefore name another job of the new one.
//
// So the controller never trusts a bare job ID: before it re-attaches to
// (or cancels) the job at status.jobID, VerifyJob asks job-list for that
// job's name, which must be the FluxJob's own fluxjob-<uid>; a job of
// another name, or none, means this FluxJob's job is not there.
//
// To say why, the controller also records which instance held the job
// (status.instanceID). flux-core 0.88 has no broker attribute that names
// an instance across restarts: broker.uuid and broker.starttime are made
// anew by every broker start (src/broker/broker.c init_broker_uuid,
// src/broker/attr.c), also after a restart on the same state directory.
// So the controller keeps its own: InstanceIdentity stores a random ID in
// the instance's KVS (key InstanceIDKey) the first time it connects; the
// KVS lives in the state directory (content.sqlite), so the ID survives
// broker restarts on the same statedir and is new in a new instance. A
// job that is gone while the recorded ID differs from the current one
// ends with reason InstanceReplaced; gone with the same ID (purged, or
// lost in a broker crash before the KVS was checkpointed) with
// JobNotFound. Only the instance owner may write the KVS; for a guest the
// identity is empty and the job-name check alone protects the FluxJob.

// InstanceIDKey is the KVS key where the controller keeps a Flux
// instance's identity.
const InstanceIDKey = "fluxjob-operator.instance-id"

// InstanceIdentity returns the identity of the Flux instance c is
// connected to (see above), storing a new random one if the instance has
// none yet. It returns "" and no error when the instance does not let this
// client use its KVS (a guest: EPERM) or has no KVS service (ENOSYS).
// It is instance-agnostic: call it once per connection to each instance.
func InstanceIdentity(ctx context.Context, c *flux.Conn) (string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		v, err := kvs.Get(ctx, c, InstanceIDKey)
		switch {
		case err == nil && len(v) > 0 && len(v) <= 64:
			return string(v), nil
		case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS):
			return "", nil
		case err != nil && !errors.Is(err, syscall.ENOENT):
			return "", fmt.Errorf("reading the Flux instance identity: %w", err)
		}
		if attempt > 0 {
			break
		}
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("making a Flux instance identity: %w", err)
		}
		if err := kvs.Put(ctx, c, InstanceIDKey, []byte(hex.EncodeToString(b[:]))); err != nil {
			if errors.Is(err, syscall.EPERM) {
				return "", nil
			}
			return "", fmt.Errorf("storing the Flux instance identity: %w", err)
		}
		// Read it back: a concurrent writer's value wins for both.
	}
	return "", fmt.Errorf("reading the Flux instance identity: the value stored in %s is not usable", InstanceIDKey)
}

// JobCheck is what VerifyJob found at a job ID.
type JobCheck int

const (
	// JobOurs: the job at the ID carries the expected name.
	JobOurs JobCheck = iota
	// JobGone: the instance has no job with that ID.
	JobGone
	// JobOther: the ID names a job with another name.
	JobOther
)

// VerifyJob asks job-list (job-list.list-id, which waits for a job
// job-list has not listed yet: src/modules/job-list/idsync.c) whether job
// id exists and is named name. It returns the name found for JobOther.
// It is instance-agnostic.
func VerifyJob(ctx context.Context, c *flux.Conn, id job.ID, name string, timeout time.Duration) (JobCheck, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := job.ListID(ctx, c, id, "name")
	switch {
	case errors.Is(err, syscall.ENOENT):
		return JobGone, "", nil
	case err != nil:
		return 0, "", fmt.Errorf("checking Flux job %s: %w", id.F58(), err)
	case info.Name != name:
		return JobOther, info.Name, nil
	}
	return JobOurs, "", nil
}

// reattach follows the job at id after proving it is obj's (VerifyJob);
// if it is not, the FluxJob fails with the reason missingJob gives and
// nothing is attached.
func (r *FluxJobReconciler) reattach(ctx context.Context, obj *fluxjobv1.FluxJob, exec *fluxbridge.Executor, ctl *flux.Conn, id job.ID) (time.Duration, *failure, error) {
	check, other, err := VerifyJob(ctx, ctl, id, fluxJobName(obj), r.Options.RPCTimeout)
	if err != nil {
		logf.FromContext(ctx).Info("cannot check the Flux job before re-attaching; retrying", "jobid", id.F58(), "error", err.Error())
		return r.Options.UnreachableRetry, nil, nil
	}
	if check == JobOurs {
		return r.attach(ctx, obj, exec, id)
	}
	return 0, r.missingJob(ctx, obj, id, check, other), nil
}

// missingJob is the failure of a FluxJob whose job is not at its ID.
func (r *FluxJobReconciler) missingJob(ctx context.Context, obj *fluxjobv1.FluxJob, id job.ID, check JobCheck, other string) *failure {
	recorded, current := recordedInstanceID(obj), r.routeFor(ctx, obj).instanceID()
	var f failure
	switch {
	case check == JobOther:
		// The other job's name stays in the log: it is not this
		// FluxJob's data.
		f = failure{Reason: fluxjobv1.ReasonInstanceReplaced, Message: fmt.Sprintf(
			"Flux job %s of this FluxJob is gone: the Flux instance was replaced and the new one gave that ID to another job, which is neither followed nor cancelled",
			id)}
	case recorded != "" && current != "" && recorded != current:
		f = failure{Reason: fluxjobv1.ReasonInstanceReplaced, Message: fmt.Sprintf(
			"Flux job %s is gone: it ran in Flux instance %s, which was replaced by instance %s", id, recorded, current)}
	default:
		f = failure{Reason: fluxjobv1.ReasonJobNotFound, Message: fmt.Sprintf(
			"Flux job %s not found in the Flux instance (purged after it ended, or lost: was the Flux instance restarted?)", id)}
	}
	logf.FromContext(ctx).Info("the FluxJob's Flux job is not at its job ID", "jobid", id.F58(), "reason", f.Reason,
		"otherName", other, "recordedInstance", recorded, "currentInstance", current)
	r.event(obj, corev1.EventTypeWarning, f.Reason, "Attach", f.Message)
	return &f
}
