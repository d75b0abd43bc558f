package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// app runs one command.
type app struct {
	opts *options
	kube *kubeClient
	env  env
}

// pollInterval paces waiting for a FluxJob to get a Flux job (-f).
var pollInterval = 500 * time.Millisecond

// getJob reads the FluxJob.
func (a *app) getJob(ctx context.Context) (*fluxjobv1.FluxJob, error) {
	var obj fluxjobv1.FluxJob
	key := types.NamespacedName{Namespace: a.kube.namespace, Name: a.opts.name}
	if err := a.kube.Get(ctx, key, &obj); err != nil {
		return nil, fmt.Errorf("FluxJob %s: %w", key, err)
	}
	return &obj, nil
}

// jobOf returns the FluxJob and its Flux job ID. With wait it waits for
// the ID (the FluxJob may not be submitted yet); without, a FluxJob
// without one is an error.
func (a *app) jobOf(ctx context.Context, wait bool) (*fluxjobv1.FluxJob, job.ID, error) {
	for {
		obj, err := a.getJob(ctx)
		if err != nil {
			return nil, 0, err
		}
		if obj.Status.JobID != 0 {
			return obj, job.ID(obj.Status.JobID), nil
		}
		if obj.Spec.Array != nil {
			return obj, 0, a.checkIndex(obj) // the index's job is looked up in Flux (indexes.go)
		}
		if !wait || obj.Status.Phase.IsTerminal() {
			return obj, 0, fmt.Errorf("FluxJob %s has no Flux job (phase %s: %s)", obj.Name, phaseOf(obj), obj.Status.Message)
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, ctx.Err()
		case <-t.C:
		}
	}
}

func phaseOf(obj *fluxjobv1.FluxJob) fluxjobv1.FluxJobPhase {
	if obj.Status.Phase == "" {
		return fluxjobv1.PhasePending
	}
	return obj.Status.Phase
}

// started reports whether the FluxJob's Flux job has started (or ended).
func started(obj *fluxjobv1.FluxJob) bool {
	p := obj.Status.Phase
	return p == fluxjobv1.PhaseRunning || p.IsTerminal() || obj.Status.StartTime != nil
}

// logs prints the job's output from Flux's output eventlog: what is there
// (then stops), or with -f everything until the eventlog ends.
func (a *app) logs(ctx context.Context) error {
	obj, id, err := a.jobOf(ctx, a.opts.follow)
	if err != nil {
		return err
	}
	if !a.opts.follow && !started(obj) && obj.Spec.Array == nil {
		return fmt.Errorf("FluxJob %s has not started (phase %s); -f waits for its output", obj.Name, phaseOf(obj))
	}
	c, err := a.dialFlux(ctx, obj)
	if err != nil {
		return err
	}
	defer c.Close()
	if id == 0 {
		if id, err = a.indexJob(ctx, c, obj, a.opts.follow); err != nil {
			return err
		}
	}
	out, errw := a.env.stdout, a.env.stderr
	if a.opts.onlyStderr {
		// one stream selected: it goes to stdout, for pipes
		errw = out
	}
	rank := ""
	if a.opts.rank >= 0 {
		rank = strconv.Itoa(a.opts.rank)
	}
	// FollowOutput, not a bare output watch: a watch started just as the
	// job's tasks ended can hang in flux-core 0.88 (see its doc).
	err = job.FollowOutput(ctx, c, id, job.OutputOptions{Sentinel: !a.opts.follow}, func(ev job.OutputEvent) error {
		return a.printOutput(ev, rank, out, errw)
	})
	if err != nil {
		return fmt.Errorf("reading the output of Flux job %s: %w", id, err)
	}
	return nil
}

// printOutput writes one output event, as flux job attach does: data to
// its stream, the shell's log messages and redirect notes to stderr.
func (a *app) printOutput(ev job.OutputEvent, rank string, out, errw io.Writer) error {
	var err error
	switch {
	case ev.Data != nil:
		d := ev.Data
		if len(d.Data) == 0 || (rank != "" && d.Rank != rank) {
			return nil
		}
		switch {
		case d.Stream == job.Stdout && !a.opts.onlyStderr:
			_, err = out.Write(d.Data)
		case d.Stream == job.Stderr && !a.opts.onlyStdout:
			_, err = errw.Write(d.Data)
		}
	case ev.Log != nil && !a.opts.onlyStdout:
		if rank != "" && ev.Log.Rank >= 0 && strconv.Itoa(ev.Log.Rank) != rank {
			return nil
		}
		_, err = fmt.Fprintln(errw, ev.Log.String())
	case ev.Redirect != nil && !a.opts.onlyStdout:
		_, err = fmt.Fprintf(errw, "%s: %s redirected to %s\n", ev.Redirect.Rank, ev.Redirect.Stream, ev.Redirect.Path)
	}
	if err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
