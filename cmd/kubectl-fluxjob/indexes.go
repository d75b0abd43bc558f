package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// An array FluxJob has no job ID of its own: each index's Flux job is
// named fluxjob-<uid>-<index> (jobspec.IndexName), and the plugin finds it
// by name in Flux's job-list, as the manager does.

// lookupChunk is the most names one job-list request asks for.
const lookupChunk = 256

// checkIndex says whether obj's --index is usable: given, and one of the
// array's indexes.
func (a *app) checkIndex(obj *fluxjobv1.FluxJob) error {
	if a.opts.index < 0 {
		return fmt.Errorf("FluxJob %s is an array (indexes %s): say which index with --index, or list them with `kubectl fluxjob indexes %s`",
			obj.Name, obj.Spec.Array.Indexes, obj.Name)
	}
	set, err := idset.Parse(obj.Spec.Array.Indexes, fluxjobv1.MaxArrayIndexes)
	if err != nil {
		return fmt.Errorf("FluxJob %s: %w", obj.Name, err)
	}
	if !set.Contains(uint32(a.opts.index)) {
		return fmt.Errorf("FluxJob %s has no index %d (indexes %s)", obj.Name, a.opts.index, obj.Spec.Array.Indexes)
	}
	return nil
}

// indexJob finds the Flux job of obj's --index (the newest attempt);
// with wait it waits until the index is submitted.
func (a *app) indexJob(ctx context.Context, c *flux.Conn, obj *fluxjobv1.FluxJob, wait bool) (job.ID, error) {
	name := jobspec.IndexName(obj, a.opts.index, 0)
	for {
		jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name"}, Constraint: job.Name(name), MaxEntries: 1})
		if err != nil {
			return 0, fmt.Errorf("looking up index %d of FluxJob %s in Flux: %w", a.opts.index, obj.Name, err)
		}
		if len(jobs) > 0 {
			return jobs[0].ID, nil
		}
		if !wait {
			return 0, fmt.Errorf("index %d of FluxJob %s has no Flux job (not submitted yet, or purged from Flux's history)", a.opts.index, obj.Name)
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// indexes prints an array's indexes with their Flux job ID, state and
// result, as job-list has them; an index not submitted yet (or purged)
// shows "-".
func (a *app) indexes(ctx context.Context) error {
	obj, err := a.getJob(ctx)
	if err != nil {
		return err
	}
	if obj.Spec.Array == nil {
		return fmt.Errorf("FluxJob %s is not an array (its Flux job is %s)", obj.Name, obj.Status.JobIDF58)
	}
	set, err := idset.Parse(obj.Spec.Array.Indexes, fluxjobv1.MaxArrayIndexes)
	if err != nil {
		return fmt.Errorf("FluxJob %s: %w", obj.Name, err)
	}
	c, err := a.dialFlux(ctx, obj)
	if err != nil {
		return err
	}
	defer c.Close()
	tw := tabwriter.NewWriter(a.env.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tJOBID\tSTATE\tRESULT")
	for start := 0; start < set.Len(); start += lookupChunk {
		n := min(lookupChunk, set.Len()-start)
		names := make([]string, n)
		for i := range names {
			names[i] = jobspec.IndexName(obj, int(set.At(start+i)), 0)
		}
		jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name", "state", "result"}, Constraint: job.Name(names...), MaxEntries: 2 * n})
		if err != nil {
			return fmt.Errorf("listing the indexes of FluxJob %s in Flux: %w", obj.Name, err)
		}
		byName := make(map[string]job.JobInfo, len(jobs))
		for _, j := range jobs {
			if _, dup := byName[j.Name]; !dup {
				byName[j.Name] = j
			}
		}
		for i, name := range names {
			j, ok := byName[name]
			switch {
			case !ok:
				fmt.Fprintf(tw, "%d\t-\t-\t-\n", set.At(start+i))
			case j.State&job.StateInactive != 0:
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", set.At(start+i), j.ID.F58(), j.State, j.Result)
			default:
				fmt.Fprintf(tw, "%d\t%s\t%s\t-\n", set.At(start+i), j.ID.F58(), j.State)
			}
		}
	}
	return tw.Flush()
}
