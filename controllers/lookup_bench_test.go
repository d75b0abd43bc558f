package controllers

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// BenchmarkLookupJob measures the job-list lookup the controller makes
// for a FluxJob with a submit marker, in an instance with 20,000 inactive
// jobs that ended two hours before the marker: unbounded (what every
// submission used to ask: a scan of the whole history) and bounded
// (job-list's "since" at the submission of the marker's anchor job less
// lookupMargin, read with one job-list.list-id, at most lookupLimit
// results: the scan stops at the first job that ended before it). A fresh submission asks nothing (TestEnvtestFreshSubmissionAsksNoJobList).
// Against the test broker; the time per op is the client's and the
// broker's work together (both in this process).
func BenchmarkLookupJob(b *testing.B) {
	const history = 20000
	var skew atomic.Int64
	skew.Store(int64(2 * time.Hour))
	srv := testbroker.New(testbroker.Options{Cores: 64, Now: func() time.Time { return time.Now().Add(-time.Duration(skew.Load())) }})
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := flux.Dial(ctx, srv.URI())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Name: "history"})
	if err != nil {
		b.Fatal(err)
	}
	spec, err := js.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	for range history {
		if _, err := job.Submit(ctx, c, spec, job.SubmitOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for {
		jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"state"}, Constraint: job.States(job.StateActive)})
		if err != nil {
			b.Fatal(err)
		}
		if len(jobs) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	skew.Store(0)
	anchor, err := job.Submit(ctx, c, spec, job.SubmitOptions{}) // the newest job the manager saw
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		anchor job.ID
	}{{"unbounded", 0}, {"bounded", anchor}} {
		b.Run(fmt.Sprintf("%s/history=%d", tc.name, history), func(b *testing.B) {
			for b.Loop() {
				ids, err := broker.Lookup(ctx, c, "fluxjob-not-there", tc.anchor, time.Minute)
				if err != nil || len(ids) != 0 {
					b.Fatal(ids, err)
				}
			}
		})
	}
}
