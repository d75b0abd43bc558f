package testbroker_test

import (
	"errors"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestExecutorScenario runs the python-executor transcript's jobs (true,
// false, a program that does not exist) through fluxbridge.Executor
// against the test broker: results 0 and 1, and a JobException.
func TestExecutorScenario(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	ctx := jobCtx(t)
	ex, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{URI: srv.URI()})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Shutdown(true, false)
	tests := []struct {
		cmd    []string
		result int
		exc    bool
	}{
		{[]string{"true"}, 0, false},
		{[]string{"false"}, 1, false},
		{[]string{"/not/a/real/app"}, 0, true},
	}
	futures := make([]*fluxbridge.Future, len(tests))
	for i, tc := range tests {
		js, err := job.FromCommand(tc.cmd, job.CommandOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if futures[i], err = ex.Submit(ctx, js, job.SubmitOptions{}); err != nil {
			t.Fatalf("submit %v: %v", tc.cmd, err)
		}
	}
	for i, tc := range tests {
		res, err := futures[i].Result(ctx)
		var je *fluxbridge.JobException
		if tc.exc {
			if !errors.As(err, &je) {
				t.Errorf("%v: Result = %d, %v; want a JobException", tc.cmd, res, err)
			}
			continue
		}
		if err != nil || res != tc.result {
			t.Errorf("%v: Result = %d, %v; want %d", tc.cmd, res, err, tc.result)
		}
	}
}
