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
// v0.88.0 src/modules/job-list/match.c compares it exactly), bounded by
// "since" (job-list stops its scan of the inactive jobs at the first one
// that became inactive before it, src/modules/job-list/list.c
// get_jobs_from_list; pending and running jobs are always scanned) and at
// most lookupLimit results.
//
// "since" is compared with the broker's clock (t_inactive), so it must
// come from the broker's clock, not the manager's: the submission marker
// records an anchor, a job ID the manager saw on that instance before it
// wrote the marker (Anchor: job-manager.getinfo's max_jobid, asked once
// per connection, raised by every job ID its tracker is told since). That job was submitted before the FluxJob's, so its
// t_submit (job-list.list-id, one O(1) request) is no later than the
// FluxJob's job's t_inactive, on the same clock: the bound holds however
// far the manager's and the broker's clocks are apart. lookupMargin only
// covers the broker's clock stepping back between the two submissions.
// Without an anchor (a marker from an earlier version, a guest refused
// getinfo, an instance with no job yet) or with an anchor job-list no
// longer knows (purged), the lookup scans all inactive jobs: slower, never
// wrong.

const (
	// lookupMargin is subtracted from the anchor's t_submit for
	// job-list's "since": the broker's clock may step back a little.
	lookupMargin = time.Minute
	// lookupLimit bounds the jobs a lookup returns (one is expected).
	lookupLimit = 8
)

// Lookup returns the IDs of the jobs named name that are active, or
// became inactive after the job anchor was submitted (anchor 0: any time),
// newest first.
func Lookup(ctx context.Context, c *flux.Conn, name string, anchor job.ID, timeout time.Duration) ([]job.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opts := job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(name), MaxEntries: lookupLimit}
	since, err := sinceAnchor(ctx, c, anchor)
	if err != nil {
		return nil, fmt.Errorf("looking up Flux job %q: %w", name, err)
	}
	opts.Since = since
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

// sinceAnchor is job-list's "since" for a lookup of a job submitted after
// the job anchor: anchor's t_submit, on the broker's clock, less
// lookupMargin; 0 (no bound) without an anchor or when job-list does not
// know it any more.
func sinceAnchor(ctx context.Context, c *flux.Conn, anchor job.ID) (float64, error) {
	if anchor == 0 {
		return 0, nil
	}
	info, err := job.ListID(ctx, c, anchor, "t_submit")
	switch {
	case errors.Is(err, syscall.ENOENT):
		return 0, nil // purged: scan everything
	case err != nil:
		return 0, fmt.Errorf("reading the submission time of anchor job %s: %w", anchor.F58(), err)
	case info.TSubmit <= 0:
		return 0, nil
	}
	return max(info.TSubmit-lookupMargin.Seconds(), 0), nil
}

// Anchor returns a job ID submitted to rt's instance before now, for a
// submission marker (see above): job-manager.getinfo's max_jobid, asked
// once per connection, raised by every job ID the tracker is told since
// (submit and attach callbacks). 0 when there is none or the broker refuses
// (a guest of a private instance): the lookup then scans everything.
func (t *Tracker) Anchor(ctx context.Context, rt Route, timeout time.Duration) (job.ID, error) {
	_, ctl, err := rt.Get()
	if err != nil {
		return 0, err
	}
	if id, ok := t.anchorOf(rt.Name, ctl); ok {
		return id, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, err := maxJobID(ctx, ctl)
	if err != nil {
		return 0, err
	}
	t.setAnchor(rt.Name, ctl, id)
	return id, nil
}

// maxJobID asks job-manager for the highest job ID it holds (0: none
// yet, or the broker refuses a guest).
func maxJobID(ctx context.Context, c *flux.Conn) (job.ID, error) {
	var info struct {
		MaxJobID job.ID `json:"max_jobid"`
	}
	if err := c.RPC(ctx, "job-manager.getinfo", nil, &info); err != nil {
		if errors.Is(err, syscall.EPERM) {
			// A guest of a private-mode instance may not ask
			// (src/modules/job-manager/job-manager.c).
			return 0, nil
		}
		return 0, fmt.Errorf("asking job-manager for its newest job: %w", err)
	}
	return info.MaxJobID, nil
}

// CatchUp waits until job-list has listed every job job-manager has
// accepted so far: job-manager.getinfo gives the highest job ID it holds,
// and job-list.list-id of that job waits until job-list has listed it
// (flux-core src/modules/job-list/idsync.c), and so every job before it.
func CatchUp(ctx context.Context, c *flux.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	maxID, err := maxJobID(ctx, c)
	if err != nil || maxID == 0 {
		// EPERM (a guest): the adopt window alone has to do; 0: no job yet.
		return err
	}
	if _, err := job.ListID(ctx, c, maxID, "state"); err != nil && !errors.Is(err, syscall.ENOENT) {
		// ENOENT: that job was purged; job-list had listed it before.
		return fmt.Errorf("waiting for job-list to list job %s: %w", maxID.F58(), err)
	}
	return nil
}
