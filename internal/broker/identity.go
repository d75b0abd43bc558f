package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"syscall"
	"time"

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
