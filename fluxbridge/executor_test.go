package fluxbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// These tests run the Executor against the real test broker
// (fluxbridge/testbroker) over its unix socket, like flux-core's
// t/python/t0023-executor.py TestFluxExecutor runs against a real
// instance. Each contract test runs with both event sources.

func TestMain(m *testing.M) {
	fluxtest.RunRelayIfChild()
	runBenchBrokerIfChild()
	goleak.VerifyTestMain(m)
}

// testDialOptions are the executors' DialOptions: none for the unix
// socket, or the stream FLUXBRIDGE_TEST_TRANSPORT selects (the contract
// tests then run over an in-memory pipe or through relay processes).
func testDialOptions() []flux.Option {
	if d := fluxtest.SelectedDialer(); d != nil {
		return []flux.Option{flux.WithDialer(d)}
	}
	return nil
}

// testTimeout bounds every wait of these tests, so a bug fails a test
// instead of hanging it.
const testTimeout = 20 * time.Second

var sources = []EventSource{EventSourceEventlog, EventSourceJournal}

// forEachSource runs fn as a subtest per event source.
func forEachSource(t *testing.T, fn func(t *testing.T, src EventSource)) {
	t.Helper()
	for _, src := range sources {
		t.Run(src.String(), func(t *testing.T) { fn(t, src) })
	}
}

func startBroker(t testing.TB, opts testbroker.Options) *testbroker.Server {
	t.Helper()
	if opts.TimeScale == 0 {
		opts.TimeScale = 0.001 // "sleep 1000" runs 1s
	}
	srv := testbroker.New(opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

type execConfig struct {
	workers int
	src     EventSource
	log     logr.Logger
	// dialOpts nil means testDialOptions().
	dialOpts  []flux.Option
	newSigner func(*flux.Conn) sign.Signer
}

func newTestExecutor(t testing.TB, srv *testbroker.Server, cfg execConfig) *Executor {
	t.Helper()
	return newTestExecutorURI(t, srv.URI(), cfg)
}

func newTestExecutorURI(t testing.TB, uri string, cfg execConfig) *Executor {
	t.Helper()
	if cfg.dialOpts == nil {
		cfg.dialOpts = testDialOptions()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	e, err := NewExecutor(ctx, ExecutorOptions{
		Workers:     cfg.workers,
		URI:         uri,
		DialOptions: cfg.dialOpts,
		EventSource: cfg.src,
		Logger:      cfg.log,
		NamePrefix:  "test",
		NewSigner:   cfg.newSigner,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, w := range e.workers {
			w.setPaused(false)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := e.ShutdownContext(ctx, true); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = e.Close()
	})
	return e
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func spec(t testing.TB, cmd ...string) *job.Jobspec {
	t.Helper()
	js, err := job.FromCommand(cmd, job.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func submit(t testing.TB, e *Executor, cmd ...string) *Future {
	t.Helper()
	f, err := e.Submit(testCtx(t), spec(t, cmd...), job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// client is a second connection to the broker, as `flux cancel` and
// friends would use.
func client(t testing.TB, srv *testbroker.Server) *flux.Conn {
	t.Helper()
	c, err := flux.Dial(testCtx(t), srv.URI(), testDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitEvent returns a channel closed when f's job posts event name.
func waitEvent(t testing.TB, f *Future, name string) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	if err := f.AddEventCallback(name, func(*Future, job.Event) { once.Do(func() { close(ch) }) }); err != nil {
		t.Fatal(err)
	}
	return ch
}

func await(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Python: test_as_completed, test_failed_job, test_exception_event, and
// the results of every kind of job end.
func TestExecutorResults(t *testing.T) {
	tests := []struct {
		name    string
		cmd     []string
		want    int
		excType string // a *JobException of this type is expected
	}{
		{name: "true", cmd: []string{"true"}, want: 0},
		{name: "false", cmd: []string{"false"}, want: 1},
		{name: "exit 3", cmd: []string{"exit", "3"}, want: 3},
		{name: "sleep", cmd: []string{"sleep", "5"}, want: 0},
		{name: "task killed by SIGTERM", cmd: []string{"sh", "-c", "kill -TERM $$"}, want: 143},
		{name: "shell killed by SIGKILL", cmd: []string{"kill-shell", "9"}, want: -9},
		{name: "shell killed by SIGTERM", cmd: []string{"kill-shell", "15"}, want: -15},
		{name: "unknown program", cmd: []string{"/not/a/real/app"}, excType: "exec"},
	}
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{workers: 2, src: src})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				f := submit(t, e, tt.cmd...)
				var exc bool
				if err := f.AddEventCallback("exception", func(*Future, job.Event) { exc = true }); err != nil {
					t.Fatal(err)
				}
				got, err := f.Result(ctx)
				id, idErr := f.JobID(ctx)
				if idErr != nil || id == 0 {
					t.Fatalf("JobID = %v, %v", id, idErr)
				}
				check := func(got int, err error) {
					t.Helper()
					if tt.excType != "" {
						var je *JobException
						if !errors.As(err, &je) || je.Type != tt.excType || je.Severity != 0 || je.ID != id {
							t.Fatalf("Result = %d, %v; want *JobException type %s on %v", got, err, tt.excType, id)
						}
						if !strings.Contains(je.Note, "No such file or directory") {
							t.Errorf("exception note = %q", je.Note)
						}
						return
					}
					if err != nil || got != tt.want {
						t.Fatalf("Result = %d, %v; want %d", got, err, tt.want)
					}
				}
				check(got, err)
				if exc != (tt.excType != "") {
					t.Errorf("exception callback called = %v", exc)
				}
				if tt.excType == "" {
					if err := f.Exception(ctx); err != nil {
						t.Errorf("Exception = %v", err)
					}
				}
				// attaching to the finished job gives the same outcome
				a, err := e.Attach(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if aid, err := a.JobID(ctx); aid != id || err != nil {
					t.Fatalf("attached JobID = %v, %v", aid, err)
				}
				exc = false
				if err := a.AddEventCallback("exception", func(*Future, job.Event) { exc = true }); err != nil {
					t.Fatal(err)
				}
				check(a.Result(ctx))
				if exc != (tt.excType != "") {
					t.Errorf("attached: exception callback called = %v", exc)
				}
			})
		}
		if err := e.Err(); err != nil {
			t.Fatalf("executor broken: %v", err)
		}
	})
}

// Python: test_as_completed and test_wait: many jobs on several workers.
func TestExecutorManyJobs(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{workers: 3, src: src})
		ctx := testCtx(t)
		var futures []*Future
		for i := 0; i < 60; i++ {
			cmd := "true"
			if i%2 == 1 {
				cmd = "false"
			}
			futures = append(futures, submit(t, e, cmd))
		}
		seen := map[job.ID]bool{}
		for i, f := range futures {
			got, err := f.Result(ctx)
			if err != nil || got != i%2 {
				t.Fatalf("future %d: Result = %d, %v", i, got, err)
			}
			id, _ := f.JobID(ctx)
			if seen[id] {
				t.Fatalf("job ID %v given twice", id)
			}
			seen[id] = true
		}
	})
}

// mainEvents is the event sequence of a job that runs and exits, as the
// Future exposes it (validate is not in Events).
const mainEvents = "submit depend priority alloc start finish release free clean"

// The job ID is known before completion; job ID, event and done callbacks
// come in order; event callbacks are still called after completion and
// replay the past when added late.
func TestExecutorCallbackOrder(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		ctx := testCtx(t)
		e.workers[0].setPaused(true) // register callbacks before anything happens
		f := submit(t, e, "sleep", "10")
		var mu sync.Mutex
		var order []string
		rec := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
		f.AddJobIDCallback(func(f *Future) {
			id, err := f.JobID(ctx)
			rec(fmt.Sprintf("jobid(ok=%v,done=%v)", err == nil && id != 0, f.Done()))
		})
		for name := range Events {
			if err := f.AddEventCallback(name, func(f *Future, ev job.Event) {
				if ev.Timestamp <= 0 {
					t.Errorf("event %s without timestamp", ev.Name)
				}
				rec(ev.Name)
			}); err != nil {
				t.Fatal(err)
			}
		}
		f.AddDoneCallback(func(*Future) { rec("done") })
		clean := waitEvent(t, f, "clean")
		e.workers[0].setPaused(false)
		if r, err := f.Result(ctx); r != 0 || err != nil {
			t.Fatalf("Result = %d, %v", r, err)
		}
		await(t, clean, "clean after completion")
		mu.Lock()
		got := strings.Join(order, " ")
		mu.Unlock()
		want := "jobid(ok=true,done=false) submit depend priority alloc start finish done release free clean"
		if got != want {
			t.Fatalf("callback order:\n got %s\nwant %s", got, want)
		}
		// replay after the fact: every event, in order, with the context
		var replay []string
		var finishStatus any
		for _, name := range strings.Fields(mainEvents) {
			if err := f.AddEventCallback(name, func(_ *Future, ev job.Event) {
				replay = append(replay, ev.Name)
				if ev.Name == "finish" {
					finishStatus = ev.Context["status"]
				}
			}); err != nil {
				t.Fatal(err)
			}
		}
		if len(replay) != len(strings.Fields(mainEvents)) || finishStatus != float64(0) {
			t.Fatalf("replay = %v, finish status %v", replay, finishStatus)
		}
		// done callbacks added late run at once, in order
		var late []int
		f.AddDoneCallback(func(*Future) { late = append(late, 1) }).AddDoneCallback(func(*Future) { late = append(late, 2) })
		if fmt.Sprint(late) != "[1 2]" {
			t.Fatalf("late done callbacks ran %v", late)
		}
		if err := f.AddEventCallback("validate", func(*Future, job.Event) {}); !errors.Is(err, ErrUnknownEvent) {
			t.Fatalf("AddEventCallback(validate) = %v, want ErrUnknownEvent", err)
		}
	})
}

// Python: test_executor_event_callbacks.
func TestExecutorEventCallbacks(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		f := submit(t, e, "false")
		var mu sync.Mutex
		expected := map[string]bool{"start": true, "finish": true, "depend": true, "priority": true, "free": true}
		for name := range Events {
			if err := f.AddEventCallback(name, func(_ *Future, ev job.Event) {
				mu.Lock()
				delete(expected, ev.Name)
				mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
		}
		// registered last, so it runs after the callbacks above for "free"
		free := waitEvent(t, f, "free")
		if r, err := f.Result(testCtx(t)); r != 1 || err != nil {
			t.Fatalf("Result = %d, %v", r, err)
		}
		await(t, free, "free")
		mu.Lock()
		defer mu.Unlock()
		if len(expected) != 0 {
			t.Fatalf("events never seen: %v", expected)
		}
	})
}

// Attach to a job submitted elsewhere, while it runs: the future replays
// the events that already happened and then follows the job.
func TestExecutorAttachRunning(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		ctx := testCtx(t)
		c := client(t, srv)
		id, err := job.SubmitJobspec(ctx, c, spec(t, "sleep", "100000"), job.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// wait until it runs, through a future of our own
		started := waitEvent(t, mustAttach(t, e, id), "start")
		await(t, started, "start")

		f := mustAttach(t, e, id)
		if got, err := f.JobID(expired()); got != id || err != nil {
			t.Fatalf("attached future's JobID = %v, %v, want %v at once", got, err, id)
		}
		var mu sync.Mutex
		var seen []string
		for _, name := range strings.Fields(mainEvents) {
			if err := f.AddEventCallback(name, func(_ *Future, ev job.Event) {
				mu.Lock()
				seen = append(seen, ev.Name)
				mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
		}
		clean := waitEvent(t, f, "clean")
		if err := job.Cancel(ctx, c, id, "enough"); err != nil {
			t.Fatal(err)
		}
		var je *JobException
		if _, err := f.Result(ctx); !errors.As(err, &je) || je.Type != "cancel" || je.Note != "enough" {
			t.Fatalf("Result = %v, want cancel JobException", err)
		}
		await(t, clean, "clean")
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(seen, " "); got != mainEvents {
			t.Fatalf("attached future saw %q, want %q", got, mainEvents)
		}
	})
}

func mustAttach(t testing.TB, e *Executor, id job.ID) *Future {
	t.Helper()
	f, err := e.Attach(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Python: test_bad_arguments (attach to job 0 and to an ID of no job).
func TestExecutorAttachUnknownJob(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		for _, id := range []job.ID{0, 0, 123456789} {
			f := mustAttach(t, e, id)
			_, err := f.Result(testCtx(t))
			if !errors.Is(err, ErrNoSuchJob) || !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "does not match any job") {
				t.Fatalf("Attach(%d): Result error = %v", id, err)
			}
			if got, err := f.JobID(testCtx(t)); got != id || err != nil {
				t.Fatalf("JobID = %v, %v", got, err)
			}
		}
		if err := e.Err(); err != nil {
			t.Fatalf("executor broken: %v", err)
		}
	})
}

// Python: test_bad_jobspecs and test_bad_arguments (submit of a bad jobspec).
func TestExecutorInvalidJobspec(t *testing.T) {
	tests := []struct {
		name    string
		jobspec any
		errno   syscall.Errno
		message string // substring of the broker's message
	}{
		{name: "missing tasks", jobspec: `{"version":1,"resources":[],"attributes":{"system":{}}}`, errno: syscall.EPERM, message: "tasks"},
		{name: "not JSON", jobspec: []byte("{not json"), errno: syscall.EINVAL},
	}
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				f, err := e.Submit(ctx, tt.jobspec, job.SubmitOptions{})
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.Result(ctx)
				var ije *InvalidJobspecError
				if !errors.As(err, &ije) || !errors.Is(err, tt.errno) || !strings.Contains(ije.Message, tt.message) || ije.Message == "" {
					t.Fatalf("Result error = %#v (%v), want InvalidJobspecError %v with %q", err, err, tt.errno, tt.message)
				}
				_, err = f.JobID(ctx)
				var se *SubmitError
				if !errors.As(err, &se) || !errors.As(err, &ije) {
					t.Fatalf("JobID error = %v, want *SubmitError wrapping the InvalidJobspecError", err)
				}
			})
		}
		// a broker-side refusal with a message of its own
		srv.SetSubmitError(syscall.ENOSYS, "submissions are disabled")
		f := submit(t, e, "true")
		var ije *InvalidJobspecError
		if _, err := f.Result(testCtx(t)); !errors.As(err, &ije) || ije.Message != "submissions are disabled" || !errors.Is(err, syscall.ENOSYS) {
			t.Fatalf("Result error = %v", err)
		}
		if err := e.Err(); err != nil {
			t.Fatalf("executor broken: %v", err)
		}
	})
}

// Submit arguments Go can check at once, and executor options.
func TestExecutorBadArguments(t *testing.T) {
	srv := startBroker(t, testbroker.Options{})
	if _, err := NewExecutor(testCtx(t), ExecutorOptions{Workers: -1, URI: srv.URI()}); err == nil {
		t.Fatal("NewExecutor with -1 workers succeeded")
	}
	if _, err := NewExecutor(testCtx(t), ExecutorOptions{EventSource: 7, URI: srv.URI()}); err == nil {
		t.Fatal("NewExecutor with an unknown event source succeeded")
	}
	srv.SetConnectError(syscall.EPERM)
	if _, err := NewExecutor(testCtx(t), ExecutorOptions{Workers: 2, URI: srv.URI()}); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("NewExecutor against a refusing broker = %v, want EPERM", err)
	}
	srv.SetConnectError(0)
	e := newTestExecutor(t, srv, execConfig{})
	tests := []struct {
		name    string
		jobspec any
		opts    job.SubmitOptions
		want    error
	}{
		{name: "nil", jobspec: nil},
		{name: "nil jobspec pointer", jobspec: (*job.Jobspec)(nil)},
		{name: "int", jobspec: 5},
		{name: "urgency 32", jobspec: spec(t, "true"), opts: job.SubmitOptions{Urgency: job.Urgency(32)}, want: syscall.EINVAL},
		{name: "urgency -1", jobspec: spec(t, "true"), opts: job.SubmitOptions{Urgency: job.Urgency(-1)}, want: syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := e.Submit(testCtx(t), tt.jobspec, tt.opts)
			if err == nil || f != nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Submit = %v, %v", f, err)
			}
		})
	}
	if _, err := e.Submit(expired(), spec(t, "true"), job.SubmitOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit with a done context = %v", err)
	}
	if _, err := e.Attach(expired(), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attach with a done context = %v", err)
	}
}

// Submit options: urgency (held at 0, then released), waitable, debug,
// pre-signed and an encoded jobspec.
func TestExecutorSubmitOptions(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		ctx := testCtx(t)
		c := client(t, srv)

		// urgency 0 holds the job; raising it lets it run
		f, err := e.Submit(ctx, spec(t, "true"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold), Waitable: true})
		if err != nil {
			t.Fatal(err)
		}
		prio := make(chan job.Event, 4)
		if err := f.AddEventCallback("priority", func(_ *Future, ev job.Event) { prio <- ev }); err != nil {
			t.Fatal(err)
		}
		var ev job.Event
		select {
		case ev = <-prio:
		case <-time.After(testTimeout):
			t.Fatal("no priority event")
		}
		if ev.Context["priority"] != float64(0) || f.Done() {
			t.Fatalf("held job: priority event %v, done %v", ev.Context, f.Done())
		}
		subs := make(chan job.Event, 1)
		if err := f.AddEventCallback("submit", func(_ *Future, ev job.Event) { subs <- ev }); err != nil {
			t.Fatal(err)
		}
		if sub := <-subs; sub.Context["urgency"] != float64(0) {
			t.Fatalf("submit context = %v", sub.Context)
		}
		id, err := f.JobID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := job.SetUrgency(ctx, c, id, job.UrgencyDefault); err != nil {
			t.Fatal(err)
		}
		if r, err := f.Result(ctx); r != 0 || err != nil {
			t.Fatalf("Result = %d, %v", r, err)
		}
		wr, err := job.Wait(ctx, c, id) // only a waitable job can be waited for
		if err != nil {
			t.Fatalf("Wait on the waitable job: %v", err)
		}
		_ = wr

		// an encoded jobspec, pre-signed, with debug and the highest urgency
		js, err := json.Marshal(spec(t, "exit", "4"))
		if err != nil {
			t.Fatal(err)
		}
		for _, opts := range []job.SubmitOptions{
			{},
			{PreSigned: true, Debug: true, Urgency: job.Urgency(job.UrgencyMax)},
		} {
			var in any = string(js)
			if opts.PreSigned {
				in = job.SignNone(js, srv.Owner())
			}
			f, err := e.Submit(ctx, in, opts)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := f.Result(ctx); r != 4 || err != nil {
				t.Fatalf("%+v: Result = %d, %v", opts, r, err)
			}
		}
	})
}

// Python: test_cancel_submit, test_cancel_attach, with the worker paused
// so that the future is certainly still pending.
func TestExecutorCancelFuture(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		ctx := testCtx(t)
		done := submit(t, e, "true")
		id, err := done.JobID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e.workers[0].setPaused(true)
		sub := submit(t, e, "false")
		att := mustAttach(t, e, id)
		for _, f := range []*Future{sub, att} {
			var called int
			f.AddDoneCallback(func(*Future) { called++ })
			if f.Running() || f.Done() {
				t.Fatal("queued future is running or done")
			}
			for i := 0; i < 3; i++ {
				if !f.Cancel() {
					t.Fatal("Cancel of a queued future failed")
				}
			}
			if !f.Cancelled() || !f.Done() || f.Running() || called != 1 {
				t.Fatalf("Cancelled %v Done %v Running %v callbacks %d", f.Cancelled(), f.Done(), f.Running(), called)
			}
			if err := f.Exception(ctx); !errors.Is(err, ErrCancelled) {
				t.Fatalf("Exception = %v", err)
			}
		}
		if _, err := sub.JobID(ctx); !errors.Is(err, ErrCancelled) {
			t.Fatalf("JobID of cancelled submission = %v", err)
		}
		if got, err := att.JobID(ctx); got != id || err != nil {
			t.Fatalf("JobID of cancelled attach = %v, %v", got, err)
		}
		// once running, Cancel fails and the job completes
		running := submit(t, e, "sleep", "200")
		e.workers[0].setPaused(false)
		await(t, waitEvent(t, running, "submit"), "submit")
		if running.Cancel() || running.Cancelled() {
			t.Fatal("Cancel of a running future succeeded")
		}
		if !running.Running() {
			t.Fatal("future not running")
		}
		if r, err := running.Result(ctx); r != 0 || err != nil {
			t.Fatalf("Result = %d, %v", r, err)
		}
		if running.Cancel() || running.Running() {
			t.Fatal("Cancel of a done future succeeded")
		}
		if got := len(srv.Jobs()); got != 2 {
			t.Fatalf("broker has %d jobs, want 2 (the cancelled submission must not be sent)", got)
		}
	})
}

// A job cancelled, or given a fatal exception, through Flux while it runs
// completes its future with a *JobException of severity 0. A signal sent
// with job-manager.kill ends it like a signal from anywhere else.
func TestExecutorJobEndedThroughFlux(t *testing.T) {
	tests := []struct {
		name    string
		end     func(ctx context.Context, c *flux.Conn, id job.ID) error
		excType string
		note    string
		result  int
	}{
		{name: "cancel", end: func(ctx context.Context, c *flux.Conn, id job.ID) error {
			return job.Cancel(ctx, c, id, "cancelled by test")
		}, excType: "cancel", note: "cancelled by test"},
		{name: "raise severity 0", end: func(ctx context.Context, c *flux.Conn, id job.ID) error {
			return job.Raise(ctx, c, id, "test", 0, "fatal")
		}, excType: "test", note: "fatal"},
		{name: "kill SIGKILL", end: func(ctx context.Context, c *flux.Conn, id job.ID) error {
			return job.Kill(ctx, c, id, syscall.SIGKILL)
		}, result: 128 + 9},
	}
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{TimeScale: 1})
		e := newTestExecutor(t, srv, execConfig{src: src})
		c := client(t, srv)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				f := submit(t, e, "sleep", "100000")
				await(t, waitEvent(t, f, "start"), "start")
				// a severity-1 exception does not end it
				id, _ := f.JobID(ctx)
				if err := job.Raise(ctx, c, id, "warn", 1, "just a warning"); err != nil {
					t.Fatal(err)
				}
				if err := tt.end(ctx, c, id); err != nil {
					t.Fatal(err)
				}
				r, err := f.Result(ctx)
				if tt.excType == "" {
					if err != nil || r != tt.result {
						t.Fatalf("Result = %d, %v; want %d", r, err, tt.result)
					}
					return
				}
				var je *JobException
				if !errors.As(err, &je) || je.Severity != 0 || je.Type != tt.excType || je.Note != tt.note || je.ID != id {
					t.Fatalf("Result error = %v, want JobException %s", err, tt.excType)
				}
				if je.Event.Name != "exception" {
					t.Fatalf("JobException.Event = %+v", je.Event)
				}
			})
		}
	})
}

// Python: test_submit_after_shutdown; Shutdown's wait and cancelFutures
// semantics, and calling it many times.
func TestExecutorShutdown(t *testing.T) {
	tests := []struct {
		wait, cancelFutures bool
	}{
		{false, false}, {false, true}, {true, false}, {true, true},
	}
	for _, src := range sources {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%v/wait=%v,cancel=%v", src, tt.wait, tt.cancelFutures), func(t *testing.T) {
				srv := startBroker(t, testbroker.Options{})
				before := goleak.IgnoreCurrent()
				e := newTestExecutor(t, srv, execConfig{src: src})
				ctx := testCtx(t)
				done := submit(t, e, "true")
				if _, err := done.Result(ctx); err != nil {
					t.Fatal(err)
				}
				running := submit(t, e, "sleep", "300")
				await(t, waitEvent(t, running, "submit"), "submit")
				e.workers[0].setPaused(true)
				queued := []*Future{submit(t, e, "true"), submit(t, e, "false")}

				e.Shutdown(false, tt.cancelFutures)
				for _, f := range queued {
					if f.Cancelled() != tt.cancelFutures {
						t.Fatalf("queued future cancelled = %v", f.Cancelled())
					}
				}
				if running.Cancelled() || done.Cancelled() {
					t.Fatal("a running or done future was cancelled")
				}
				for i := 0; i < 3; i++ {
					if _, err := e.Submit(ctx, spec(t, "true"), job.SubmitOptions{}); !errors.Is(err, ErrShutdown) {
						t.Fatalf("Submit after Shutdown = %v", err)
					}
					if _, err := e.Submit(ctx, nil, job.SubmitOptions{}); !errors.Is(err, ErrShutdown) {
						t.Fatalf("Submit(nil) after Shutdown = %v", err)
					}
					if _, err := e.Attach(ctx, 5); !errors.Is(err, ErrShutdown) {
						t.Fatalf("Attach after Shutdown = %v", err)
					}
				}
				e.workers[0].setPaused(false)
				e.Shutdown(tt.wait, tt.cancelFutures)
				if tt.wait {
					if !running.Done() {
						t.Fatal("Shutdown(wait) returned before the running future completed")
					}
					for i, w := range e.workers {
						select {
						case <-w.conn.Done():
						default:
							t.Fatalf("Shutdown(wait) left worker %d's connection open", i)
						}
					}
					// every goroutine of the executor is gone (goleak retries
					// while the broker's side of the connections winds down)
					goleak.VerifyNone(t, before)
				}
				if err := e.ShutdownContext(ctx, false); err != nil {
					t.Fatal(err)
				}
				if r, err := running.Result(ctx); r != 0 || err != nil {
					t.Fatalf("running future: %d, %v", r, err)
				}
				for i, f := range queued {
					r, err := f.Result(ctx)
					if tt.cancelFutures {
						if !errors.Is(err, ErrCancelled) {
							t.Fatalf("queued %d: %v", i, err)
						}
					} else if err != nil || r != i {
						t.Fatalf("queued %d: %d, %v", i, r, err)
					}
				}
				if err := e.Err(); err != nil {
					t.Fatalf("Err after shutdown = %v", err)
				}
			})
		}
	}
}

// A waiting shutdown bounded by a context returns the context's error
// while a job never ends; Close then ends everything.
func TestExecutorShutdownContextAndClose(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		f, err := e.Submit(testCtx(t), spec(t, "true"), job.SubmitOptions{Urgency: job.Urgency(0)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.JobID(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := e.ShutdownContext(ctx, true); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ShutdownContext = %v", err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Result(testCtx(t)); !errors.Is(err, flux.ErrClosed) {
			t.Fatalf("Result after Close = %v, want flux.ErrClosed", err)
		}
		if err := e.Err(); err != nil {
			t.Fatalf("Close broke the executor: %v", err)
		}
	})
}

// The broker connection drops: pending futures fail with a connection
// error, the executor reports itself broken, and nothing hangs. The same
// holds, with the same errors, when the connection is an SSH session to a
// relay and the SSH connection drops.
func TestExecutorBrokenConnection(t *testing.T) {
	tests := []struct {
		name string
		// connect returns the executor's URI and dial options, and how to
		// cut the connection.
		connect func(t *testing.T, srv *testbroker.Server) (uri string, opts []flux.Option, drop func() error)
	}{
		{"broker drops its clients", func(t *testing.T, srv *testbroker.Server) (string, []flux.Option, func() error) {
			return srv.URI(), testDialOptions(), srv.DropConnections
		}},
		{"ssh connection drops", func(t *testing.T, srv *testbroker.Server) (string, []flux.Option, func() error) {
			uri, cfg, sshd := sshToBroker(t, srv)
			return uri, []flux.Option{flux.WithSSH(cfg)}, func() error { sshd.DropAll(); return nil }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachSource(t, func(t *testing.T, src EventSource) {
				srv := startBroker(t, testbroker.Options{TimeScale: 1})
				uri, opts, drop := tt.connect(t, srv)
				e := newTestExecutorURI(t, uri, execConfig{workers: 2, src: src, dialOpts: opts})
				ctx := testCtx(t)
				var running []*Future
				for i := 0; i < 4; i++ {
					f := submit(t, e, "sleep", "100000")
					await(t, waitEvent(t, f, "start"), "start")
					running = append(running, f)
				}
				e.workers[0].setPaused(true)
				e.workers[1].setPaused(true)
				queued := []*Future{submit(t, e, "true"), submit(t, e, "true")}
				if err := e.Err(); err != nil {
					t.Fatal(err)
				}
				if err := drop(); err != nil {
					t.Fatal(err)
				}
				for i, f := range append(running, queued...) {
					_, err := f.Result(ctx)
					if !errors.Is(err, flux.ErrDisconnected) {
						t.Fatalf("future %d: Result = %v, want a connection error", i, err)
					}
				}
				if _, err := queued[0].JobID(ctx); !errors.Is(err, flux.ErrDisconnected) {
					t.Fatalf("JobID of a never-submitted future = %v", err)
				}
				if err := e.Err(); !errors.Is(err, ErrBroken) || !errors.Is(err, flux.ErrDisconnected) {
					t.Fatalf("Err = %v, want ErrBroken", err)
				}
				if _, err := e.Submit(ctx, spec(t, "true"), job.SubmitOptions{}); !errors.Is(err, ErrBroken) {
					t.Fatalf("Submit on a broken executor = %v", err)
				}
				if _, err := e.Attach(ctx, 25979); !errors.Is(err, ErrBroken) {
					t.Fatalf("Attach on a broken executor = %v", err)
				}
				if err := e.ShutdownContext(ctx, false); err != nil {
					t.Fatalf("shutdown of a broken executor: %v", err)
				}
			})
		})
	}
}

// A callback that panics is recovered and logged with the job ID; the
// future and its other callbacks carry on.
func TestExecutorCallbackPanic(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		var mu sync.Mutex
		var logs []string
		l := funcr.New(func(prefix, args string) {
			mu.Lock()
			logs = append(logs, prefix+" "+args)
			mu.Unlock()
		}, funcr.Options{})
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src, log: l})
		ctx := testCtx(t)
		e.workers[0].setPaused(true)
		f := submit(t, e, "true")
		var after []string
		f.AddJobIDCallback(func(*Future) { panic("jobid boom") })
		f.AddJobIDCallback(func(*Future) { after = append(after, "jobid") })
		if err := f.AddEventCallback("start", func(*Future, job.Event) { panic("event boom") }); err != nil {
			t.Fatal(err)
		}
		if err := f.AddEventCallback("start", func(*Future, job.Event) { after = append(after, "start") }); err != nil {
			t.Fatal(err)
		}
		f.AddDoneCallback(func(*Future) { panic(errors.New("done boom")) })
		doneAfter := make(chan struct{})
		f.AddDoneCallback(func(*Future) { close(doneAfter) })
		e.workers[0].setPaused(false)
		if r, err := f.Result(ctx); r != 0 || err != nil {
			t.Fatalf("Result = %d, %v", r, err)
		}
		await(t, doneAfter, "the done callback after the panicking one")
		if got := strings.Join(after, " "); got != "jobid start" {
			t.Fatalf("callbacks after panics: %q", got)
		}
		id, _ := f.JobID(ctx)
		mu.Lock()
		defer mu.Unlock()
		for _, want := range []string{"jobid boom", "event boom", "done boom"} {
			found := false
			for _, line := range logs {
				if strings.Contains(line, want) && strings.Contains(line, fmt.Sprintf(`"jobid"="%s"`, id)) {
					found = true
				}
			}
			if !found {
				t.Errorf("no log line with %q and the job ID %s in %q", want, id, logs)
			}
		}
		if err := e.Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// Python: test_callback_deadlock, on a live executor.
func TestExecutorDeadlockGuard(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{src: src})
		ctx := testCtx(t)
		e.workers[0].setPaused(true)
		f := submit(t, e, "true")
		errs := make(chan error, 8)
		f.AddJobIDCallback(func(f *Future) {
			_, err := f.Result(ctx)
			errs <- err
			errs <- f.Exception(ctx)
		})
		if err := f.AddEventCallback("start", func(f *Future, _ job.Event) {
			_, err := f.Result(ctx)
			errs <- err
		}); err != nil {
			t.Fatal(err)
		}
		e.workers[0].setPaused(false)
		if _, err := f.Result(ctx); err != nil {
			t.Fatal(err)
		}
		close(errs)
		n := 0
		for err := range errs {
			n++
			if !errors.Is(err, ErrCallbackDeadlock) {
				t.Fatalf("wait inside a callback = %v, want ErrCallbackDeadlock", err)
			}
		}
		if n != 3 {
			t.Fatalf("got %d errors, want 3", n)
		}
	})
}

// Futures are spread over the workers, each with its own connection.
func TestExecutorWorkersSpread(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{Cores: 64})
		e := newTestExecutor(t, srv, execConfig{workers: 4, src: src})
		if n := srv.ConnCount(); n != 4 {
			t.Fatalf("broker sees %d connections, want 4", n)
		}
		ctx := testCtx(t)
		var fs []*Future
		for i := 0; i < 40; i++ {
			fs = append(fs, submit(t, e, "sleep", "100"))
		}
		for _, f := range fs {
			if _, err := f.Result(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for i, w := range e.workers {
			if n := w.started.Load(); n < 5 {
				t.Errorf("worker %d started %d futures of 40", i, n)
			}
		}
	})
}

// The events journal is for the instance owner only: a guest's executor
// with EventSourceJournal fails at NewExecutor, not job by job.
func TestExecutorJournalNeedsOwner(t *testing.T) {
	other := uint32(4242)
	srv := startBroker(t, testbroker.Options{OwnerUID: &other, AllowGuests: true, GuestSigning: true})
	_, err := NewExecutor(testCtx(t), ExecutorOptions{URI: srv.URI(), EventSource: EventSourceJournal, Workers: 2})
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("NewExecutor(journal) as a guest = %v, want EPERM", err)
	}
	// the per-job eventlog works for a guest
	e := newTestExecutor(t, srv, execConfig{src: EventSourceEventlog})
	if r, err := submit(t, e, "false").Result(testCtx(t)); r != 1 || err != nil {
		t.Fatalf("guest job: %d, %v", r, err)
	}
}

// matchEvent aligns journal events with the eventlog read at attach.
func TestMatchEvent(t *testing.T) {
	ev := func(name string, ts float64) job.Event { return job.Event{Name: name, Timestamp: ts} }
	known := []job.Event{ev("submit", 1), ev("urgency", 2), ev("urgency", 2), ev("priority", 3)}
	tests := []struct {
		name    string
		aligned int
		ev      job.Event
		want    int
	}{
		{"first match", -1, ev("urgency", 2), 1},
		{"next position", 1, ev("urgency", 2), 2},
		{"next position only", 2, ev("urgency", 2), -1},
		{"new event", -1, ev("alloc", 4), -1},
		{"same name other time", -1, ev("submit", 9), -1},
		{"after the end", 3, ev("alloc", 4), -1},
		{"context differs", -1, job.Event{Name: "submit", Timestamp: 1, Context: map[string]any{"a": 1.0}}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchEvent(known, tt.aligned, tt.ev); got != tt.want {
				t.Fatalf("matchEvent = %d, want %d", got, tt.want)
			}
		})
	}
}

// Futures attached at every point of a job's life each see every event
// exactly once and in order: the ones it had are replayed, the rest
// follow (with the journal: the eventlog read at attach and the journal
// spliced without duplicates or gaps).
func TestExecutorAttachDuringLifecycle(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{Delays: testbroker.RealisticDelays()})
		e := newTestExecutor(t, srv, execConfig{workers: 2, src: src})
		ctx := testCtx(t)
		c := client(t, srv)
		id, err := job.SubmitJobspec(ctx, c, spec(t, "true"), job.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		type rec struct {
			mu    sync.Mutex
			names []string
			clean chan struct{}
		}
		var recs []*rec
		for i := 0; i < 40; i++ {
			f := mustAttach(t, e, id)
			r := &rec{clean: make(chan struct{})}
			for _, name := range strings.Fields(mainEvents) {
				if err := f.AddEventCallback(name, func(_ *Future, ev job.Event) {
					r.mu.Lock()
					r.names = append(r.names, ev.Name)
					r.mu.Unlock()
					if ev.Name == "clean" {
						close(r.clean)
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			recs = append(recs, r)
			time.Sleep(2 * time.Millisecond) // spread the attaches over the job's life
		}
		for i, r := range recs {
			await(t, r.clean, "clean")
			r.mu.Lock()
			got := strings.Join(r.names, " ")
			r.mu.Unlock()
			if got != mainEvents {
				t.Fatalf("future %d saw %q, want %q", i, got, mainEvents)
			}
		}
	})
}

// The journal keeps the events of a job whose submit event arrives before
// the submit response, and drops what no submission in flight can own.
func TestJournalOrphans(t *testing.T) {
	s := &journalSource{
		inflight: make(map[*submitTicket]struct{}),
		orphans:  make(map[job.ID]*journalOrphan),
		subs:     make(map[job.ID]*journalSub),
		claimed:  make(map[job.ID]*journalSub),
	}
	entry := func(id job.ID, names ...string) job.JournalEntry {
		e := job.JournalEntry{ID: id}
		for _, n := range names {
			e.Events = append(e.Events, job.Event{Name: n, Timestamp: 1})
		}
		return e
	}
	s.dispatch(entry(1, "submit")) // nobody submitting: not kept
	if len(s.orphans) != 0 {
		t.Fatalf("orphans = %v", s.orphans)
	}
	endA := s.beginSubmit()
	s.dispatch(entry(2, "submit"))
	s.dispatch(entry(2, "depend"))
	s.dispatch(entry(3, "depend")) // not a new job: not kept
	endB := s.beginSubmit()
	s.dispatch(entry(4, "submit"))
	endA(2, true)
	if sub := s.claimed[2]; sub == nil || len(sub.held) != 2 || sub.held[1].Name != "depend" {
		t.Fatalf("job 2 subscription = %+v", s.claimed[2])
	}
	if _, ok := s.orphans[4]; !ok || len(s.orphans) != 1 {
		t.Fatalf("orphans after A = %v, want job 4 kept for B", s.orphans)
	}
	endB(0, false)
	if len(s.orphans) != 0 || len(s.inflight) != 0 {
		t.Fatalf("orphans %v, inflight %v after every submission ended", s.orphans, s.inflight)
	}
	// later events of a followed job go to its subscription
	s.dispatch(entry(2, "priority"))
	if q := s.claimed[2].held; len(q) != 3 {
		t.Fatalf("queue = %v", q)
	}
}

// With the journal, the first worker's connection carries every worker's
// events: a waiting Shutdown lets the first worker finish early without
// taking the other workers' jobs down with its connection.
func TestExecutorShutdownJournalFirstWorkerIdleFirst(t *testing.T) {
	srv := startBroker(t, testbroker.Options{})
	e := newTestExecutor(t, srv, execConfig{workers: 3, src: EventSourceJournal})
	ctx := testCtx(t)
	// pick spreads equal loads round robin: worker 0 gets the short job
	futures := []*Future{submit(t, e, "true"), submit(t, e, "sleep", "300"), submit(t, e, "sleep", "300")}
	for _, f := range futures[1:] {
		await(t, waitEvent(t, f, "start"), "start")
	}
	if _, err := futures[0].Result(ctx); err != nil {
		t.Fatal(err)
	}
	for i, w := range e.workers {
		if n := w.started.Load(); n != 1 {
			t.Fatalf("worker %d started %d futures, want 1 each", i, n)
		}
	}
	if err := e.ShutdownContext(ctx, false); err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		if r, err := f.Result(ctx); r != 0 || err != nil {
			t.Fatalf("future %d: %d, %v", i, r, err)
		}
	}
	if err := e.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	for i, w := range e.workers {
		select {
		case <-w.conn.Done():
		default:
			t.Fatalf("worker %d's connection still open after Shutdown", i)
		}
	}
}
