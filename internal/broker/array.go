package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The verbs of an array's indexes (controllers/array.go). An index's job
// is followed by a future like any other, but what its callbacks report
// goes to the caller's IndexCallbacks, not into a View: an array keeps one
// byte of state and a job ID per index (internal/array), not an eventlog.

// IndexObserver receives what one index's future reports. Its methods
// run on the goroutine that handles the future's events (see
// fluxbridge.Observer), one at a time, and must not block. It is an
// interface, not a set of funcs, so that an index costs one small value
// (an array holds up to 100,000 of them).
type IndexObserver interface {
	// ID is called with the job ID once Flux accepted the job.
	ID(job.ID)
	// Start is called on the job's start event.
	Start()
	// Done is called once with how the future ended.
	Done(Outcome)
}

// SubmitIndex submits jobspec to rt's instance and reports to cb. An error
// means the executor did not take the job: it was not submitted. The
// job is followed by a lean future (fluxbridge.Executor.SubmitLean): it
// keeps none of the job's events, so that an array's active indexes cost
// little each.
func SubmitIndex(ctx context.Context, rt Route, jobspec []byte, opts job.SubmitOptions, cb IndexObserver) error {
	exec, _, err := rt.Get()
	if err != nil {
		return err
	}
	if err := exec.SubmitLean(ctx, jobspec, opts, &indexObserver{instance: rt.Name, cb: cb, submitted: true}); err != nil {
		return fmt.Errorf("submitting to Flux instance %s: %w", rt.Name, err)
	}
	return nil
}

// AttachIndex follows the existing job id (proved to be the index's by
// its name) and reports to cb.
func AttachIndex(ctx context.Context, rt Route, id job.ID, cb IndexObserver) error {
	exec, _, err := rt.Get()
	if err != nil {
		return err
	}
	if err := exec.AttachLean(ctx, id, &indexObserver{instance: rt.Name, cb: cb}); err != nil {
		return fmt.Errorf("attaching to Flux job %s: %w", id.F58(), err)
	}
	submissionsTotal.WithLabelValues(rt.Name, "adopted").Inc()
	return nil
}

// indexObserver is an index's fluxbridge.Observer: it counts the
// submission and hands what the future reports to cb.
type indexObserver struct {
	instance  string
	cb        IndexObserver
	submitted bool // counted in submissionsTotal at the job ID or the end
	counted   bool // called only one at a time (fluxbridge.Observer)
}

func (o *indexObserver) JobID(id job.ID) {
	if o.submitted {
		o.counted = true
		submissionsTotal.WithLabelValues(o.instance, "success").Inc()
	}
	o.cb.ID(id)
}

func (o *indexObserver) Start() { o.cb.Start() }

func (o *indexObserver) Done(res int, err error) {
	if o.submitted && !o.counted {
		submissionsTotal.WithLabelValues(o.instance, "error").Inc()
	}
	o.cb.Done(Classify(res, err))
}

// Listed is what job-list says of one job found by name.
type Listed struct {
	ID     job.ID
	Active bool
	// Success: inactive and successful (exit 0, no fatal exception).
	Success bool
	// Result is job-list's result of an inactive job.
	Result job.Result
	// ExcType, ExcSeverity and ExcNote are job-list's exception of the job
	// (the most severe raised; ExcType "" when none was).
	ExcType     string
	ExcSeverity int
	ExcNote     string
	// WaitStatus is the job's finish status, if it finished.
	WaitStatus *job.WaitStatus
	// Inactive is when the job became inactive (zero: active).
	Inactive time.Time
}

// LookupNames finds the jobs named names on rt's instance that are active
// or became inactive after the job anchor was submitted (see Lookup), in
// one job-list request: the RFC 31 name constraint takes a list. A name
// with more than one job maps to the newest.
func LookupNames(ctx context.Context, rt Route, names []string, anchor job.ID, timeout time.Duration) (map[string]Listed, error) {
	_, c, err := rt.Get()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	since, err := sinceAnchor(ctx, c, anchor)
	if err != nil {
		return nil, fmt.Errorf("looking up %d Flux jobs by name: %w", len(names), err)
	}
	opts := job.ListOptions{Attrs: []string{"name", "state", "result", "success", "exception_occurred", "exception_type",
		"exception_severity", "exception_note", "waitstatus", "t_inactive"}, Constraint: job.Name(names...),
		MaxEntries: 2 * len(names), Since: since}
	jobs, err := job.List(ctx, c, opts)
	if err != nil {
		return nil, fmt.Errorf("looking up %d Flux jobs by name in job-list: %w", len(names), err)
	}
	out := make(map[string]Listed, len(jobs))
	for _, j := range jobs {
		if _, dup := out[j.Name]; dup {
			continue // newest first
		}
		l := Listed{ID: j.ID, Active: j.State&job.StateInactive == 0, Success: j.Success, Result: j.Result, WaitStatus: j.WaitStatus}
		if j.ExceptionOccurred {
			l.ExcType, l.ExcSeverity, l.ExcNote = j.ExceptionType, j.ExceptionSeverity, j.ExceptionNote
		}
		if j.TInactive > 0 {
			l.Inactive = time.Unix(0, int64(j.TInactive*1e9))
		}
		out[j.Name] = l
	}
	return out, nil
}
