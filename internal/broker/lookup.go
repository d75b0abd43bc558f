package broker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Looking a job up by name
//
// A FluxJob's Flux job carries its name (fluxjob-<uid>); after a crash
// between the submission marker and the job ID, Lookup finds it with
// job-list.list and the RFC 31 constraint {"name": [...]} (flux-core
// v0.88.0 src/modules/job-list/match.c compares it exactly), bounded:
// "since" the marker less lookupMargin (job-list stops its scan of the
// inactive jobs at the first one that ended before that,
// src/modules/job-list/list.c get_jobs_from_list; pending and running jobs
// are always scanned) and at most lookupLimit results.

const (
	// lookupMargin is subtracted from the marker for job-list's "since":
	// it covers clock skew between the manager and the broker.
	lookupMargin = time.Minute
	// lookupLimit bounds the jobs a lookup returns (one is expected).
	lookupLimit = 8
)

// Lookup returns the IDs of the jobs named name that were active, or
// ended after since (zero: any time), newest first.
func Lookup(ctx context.Context, c *flux.Conn, name string, since time.Time, timeout time.Duration) ([]job.ID, error) {
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

// CatchUp waits until job-list has listed every job job-manager has
// accepted so far: job-manager.getinfo gives the highest job ID it holds,
// and job-list.list-id of that job waits until job-list has listed it
// (flux-core src/modules/job-list/idsync.c), and so every job before it.
func CatchUp(ctx context.Context, c *flux.Conn, timeout time.Duration) error {
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
