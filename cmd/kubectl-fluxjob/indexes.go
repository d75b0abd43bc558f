package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// An array FluxJob has no job ID of its own: each index's Flux job is
// named fluxjob-<uid>-<index> (jobspec.IndexName), and the plugin finds it
// by name in Flux's job-list, as the manager does. An array that retries
// its indexes has one job per attempt (fluxjob-<index>.<attempt>): the
// newest attempt found is the index's.

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

// attemptWindow is the highest attempt number an index of obj may have.
func attemptWindow(obj *fluxjobv1.FluxJob) int {
	if rt := array.RetryOf(obj.Spec.Array, obj.Spec.FailurePolicy); rt != nil {
		return rt.Window
	}
	return 0
}

// newestAttempt returns the newest attempt of index among jobs (false:
// none), its names' attempts 0..window.
func newestAttempt(obj *fluxjobv1.FluxJob, index, window int, byName map[string]job.JobInfo) (job.JobInfo, int, bool) {
	for k := window; k >= 0; k-- {
		if j, ok := byName[jobspec.IndexName(obj, index, k)]; ok {
			return j, k, true
		}
	}
	return job.JobInfo{}, 0, false
}

// listNames returns job-list's jobs named names, by name (the newest of a
// name).
func listNames(ctx context.Context, c *flux.Conn, names []string, attrs ...string) (map[string]job.JobInfo, error) {
	jobs, err := job.List(ctx, c, job.ListOptions{Attrs: append([]string{"name"}, attrs...), Constraint: job.Name(names...), MaxEntries: 2 * len(names)})
	if err != nil {
		return nil, err
	}
	byName := make(map[string]job.JobInfo, len(jobs))
	for _, j := range jobs {
		if _, dup := byName[j.Name]; !dup {
			byName[j.Name] = j
		}
	}
	return byName, nil
}

// indexJob finds the Flux job of obj's --index (the newest attempt);
// with wait it waits until the index is submitted.
func (a *app) indexJob(ctx context.Context, c *flux.Conn, obj *fluxjobv1.FluxJob, wait bool) (job.ID, error) {
	window := attemptWindow(obj)
	var names []string
	for k := 0; k <= window; k++ {
		names = append(names, jobspec.IndexName(obj, a.opts.index, k))
	}
	for {
		byName, err := listNames(ctx, c, names)
		if err != nil {
			return 0, fmt.Errorf("looking up index %d of FluxJob %s in Flux: %w", a.opts.index, obj.Name, err)
		}
		if j, _, ok := newestAttempt(obj, a.opts.index, window, byName); ok {
			return j.ID, nil
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
// shows "-". An array that retries its indexes shows the newest attempt's
// job and its number (ATTEMPT).
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
	window := attemptWindow(obj)
	if window > 0 {
		fmt.Fprintln(tw, "INDEX\tJOBID\tATTEMPT\tSTATE\tRESULT")
	} else {
		fmt.Fprintln(tw, "INDEX\tJOBID\tSTATE\tRESULT")
	}
	per := max(1, lookupChunk/(window+1))
	for start := 0; start < set.Len(); start += per {
		n := min(per, set.Len()-start)
		names := make([]string, 0, n*(window+1))
		for i := range n {
			for k := 0; k <= window; k++ {
				names = append(names, jobspec.IndexName(obj, int(set.At(start+i)), k))
			}
		}
		byName, err := listNames(ctx, c, names, "state", "result")
		if err != nil {
			return fmt.Errorf("listing the indexes of FluxJob %s in Flux: %w", obj.Name, err)
		}
		for i := range n {
			index := set.At(start + i)
			j, k, ok := newestAttempt(obj, int(index), window, byName)
			cols := []string{fmt.Sprint(index), "-", "-", "-"}
			switch {
			case !ok:
			case j.State&job.StateInactive != 0:
				cols = []string{fmt.Sprint(index), j.ID.F58(), j.State.String(), j.Result.String()}
			default:
				cols = []string{fmt.Sprint(index), j.ID.F58(), j.State.String(), "-"}
			}
			if window > 0 {
				attempt := "-"
				if ok {
					attempt = fmt.Sprint(k)
				}
				cols = append(cols[:2], append([]string{attempt}, cols[2:]...)...)
			}
			fmt.Fprintln(tw, strings.Join(cols, "\t"))
		}
	}
	return tw.Flush()
}
