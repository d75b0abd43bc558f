// Command execclient is the client process of test/realflux's executor
// benchmark rows (BenchmarkRealFlux): our executor submitting
// $REALFLUX_JOBS jobs of `true` in flux-core's test execution mode to
// $FLUX_URI and waiting for each result, then printing one result line.
// It is a program of its own, not the test binary run again, so that the
// CPU time and peak RSS the benchmark reads from its rusage are the
// executor's, not the start-up of everything the tests link.
//
// Environment: REALFLUX_JOBS (count), REALFLUX_WORKERS, REALFLUX_SOURCE
// (fluxbridge.EventSource), REALFLUX_POD_EXEC_URL (dial through that
// pods/exec URL of a test endpoint instead of FLUX_URI's own transport),
// REALFLUX_CPUPROFILE (write a CPU profile of the run there).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// ResultPrefix starts the result line.
const ResultPrefix = "REALFLUX_RESULT "

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "execclient:", err)
		os.Exit(1)
	}
}

func run() error {
	n, err := strconv.Atoi(os.Getenv("REALFLUX_JOBS"))
	if err != nil || n <= 0 {
		return fmt.Errorf("REALFLUX_JOBS=%q: want a positive count", os.Getenv("REALFLUX_JOBS"))
	}
	workers, _ := strconv.Atoi(os.Getenv("REALFLUX_WORKERS"))
	src, _ := strconv.Atoi(os.Getenv("REALFLUX_SOURCE"))
	dial, err := dialOptions(os.Getenv("REALFLUX_POD_EXEC_URL"))
	if err != nil {
		return err
	}
	if path := os.Getenv("REALFLUX_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("REALFLUX_CPUPROFILE: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("REALFLUX_CPUPROFILE: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e, err := fluxbridge.NewExecutor(ctx, fluxbridge.ExecutorOptions{Workers: workers, EventSource: fluxbridge.EventSource(src), DialOptions: dial})
	if err != nil {
		return err
	}
	res, runErr := submitAll(ctx, e, n)
	if err := e.ShutdownContext(ctx, false); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return runErr
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Println(ResultPrefix + string(out))
	return nil
}

// result is the result line's JSON.
type result struct {
	SubmitS float64 `json:"submit_s"`
	TotalS  float64 `json:"total_s"`
}

// submitAll submits n jobs, waits for every job ID (the submit time),
// then for every result (the total time).
func submitAll(ctx context.Context, e *fluxbridge.Executor, n int) (result, error) {
	js, err := job.FromCommand([]string{"true"}, job.CommandOptions{Cwd: "/"})
	if err != nil {
		return result{}, err
	}
	js.Attributes.System.Extra = map[string]any{"exec": map[string]any{"test": map[string]any{"run_duration": "0.001s"}}}
	start := time.Now()
	futures := make([]*fluxbridge.Future, n)
	for i := range futures {
		if futures[i], err = e.Submit(ctx, js, job.SubmitOptions{}); err != nil {
			return result{}, err
		}
	}
	for _, f := range futures {
		if _, err := f.JobID(ctx); err != nil {
			return result{}, err
		}
	}
	submitted := time.Since(start)
	for _, f := range futures {
		if r, err := f.Result(ctx); r != 0 || err != nil {
			return result{}, fmt.Errorf("result %d, %v", r, err)
		}
	}
	return result{SubmitS: submitted.Seconds(), TotalS: time.Since(start).Seconds()}, nil
}

// dialOptions dials through the pods/exec URL s (the benchmark's test
// endpoint, self-signed TLS) when s is set.
func dialOptions(s string) ([]flux.Option, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("REALFLUX_POD_EXEC_URL: %w", err)
	}
	cfg := &rest.Config{Host: "https://" + u.Host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	return []flux.Option{flux.WithDialer(func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		return podexec.Open(ctx, cfg, u)
	})}, nil
}
