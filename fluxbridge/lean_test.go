package fluxbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// recorder is an Observer that records its calls in order.
type recorder struct {
	mu      sync.Mutex
	calls   []string
	id      job.ID
	result  int
	err     error
	started chan struct{}
	done    chan struct{}
}

func newRecorder() *recorder {
	return &recorder{started: make(chan struct{}), done: make(chan struct{})}
}

func (r *recorder) JobID(id job.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "id")
	r.id = id
}

func (r *recorder) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "start")
	close(r.started)
}

func (r *recorder) Done(result int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "done")
	r.result, r.err = result, err
	close(r.done)
}

func (r *recorder) seen() (string, job.ID, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.calls, " "), r.id, r.result, r.err
}

// A lean future reports the job ID, the start and the end, in that order
// and once each, for every way a job ends, from both event sources.
func TestLeanFutureReports(t *testing.T) {
	hold := 0
	tests := []struct {
		name    string
		cmd     []string
		opts    job.SubmitOptions
		cancel  bool   // cancel the job once it has an ID
		calls   string // the Observer's calls
		result  int
		excType string // Done's error is a *JobException of this type
		invalid bool   // Done's error is an *InvalidJobspecError
	}{
		{name: "true", cmd: []string{"true"}, calls: "id start done"},
		{name: "exit 3", cmd: []string{"exit", "3"}, calls: "id start done", result: 3},
		{name: "killed by signal", cmd: []string{"kill-shell", "9"}, calls: "id start done", result: -9},
		{name: "unknown program", cmd: []string{"/not/a/real/app"}, calls: "id start done", excType: "exec"},
		{name: "held then cancelled", cmd: []string{"true"}, opts: job.SubmitOptions{Urgency: &hold}, cancel: true,
			calls: "id done", excType: "cancel"},
		{name: "invalid jobspec", cmd: nil, calls: "done", invalid: true},
	}
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		e := newTestExecutor(t, srv, execConfig{workers: 2, src: src})
		c := client(t, srv)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := testCtx(t)
				var js any = `{"version": 1}` // refused by job-ingest
				if tt.cmd != nil {
					js = spec(t, tt.cmd...)
				}
				r := newRecorder()
				if err := e.SubmitLean(ctx, js, tt.opts, r); err != nil {
					t.Fatal(err)
				}
				if tt.cancel {
					id := waitLeanID(t, r)
					if err := job.Cancel(ctx, c, id, "enough"); err != nil {
						t.Fatal(err)
					}
				}
				await(t, r.done, "Done")
				calls, id, result, err := r.seen()
				if calls != tt.calls {
					t.Fatalf("Observer calls %q, want %q", calls, tt.calls)
				}
				if strings.HasPrefix(calls, "id") && id == 0 {
					t.Fatalf("JobID called with 0")
				}
				var je *JobException
				var ie *InvalidJobspecError
				switch {
				case tt.excType != "":
					if !errors.As(err, &je) || je.Type != tt.excType || je.ID != id {
						t.Fatalf("Done error %v, want a %s exception of job %v", err, tt.excType, id)
					}
				case tt.invalid:
					if !errors.As(err, &ie) {
						t.Fatalf("Done error %v, want an invalid jobspec", err)
					}
				case err != nil || result != tt.result:
					t.Fatalf("Done(%d, %v), want (%d, nil)", result, err, tt.result)
				}
			})
		}
	})
}

// waitLeanID waits until r was told a job ID and returns it.
func waitLeanID(t *testing.T, r *recorder) job.ID {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		if _, id, _, _ := r.seen(); id != 0 {
			return id
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no job ID reported")
	return 0
}

// A lean future whose connection is lost ends with the connection's
// error; a lean future attached to the job again (a new executor) is told
// the ID at once, the start (replayed) and the job's real end.
func TestLeanFutureReattach(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{TimeScale: 1})
		ctx := testCtx(t)
		e := newTestExecutor(t, srv, execConfig{src: src})
		r := newRecorder()
		if err := e.SubmitLean(ctx, spec(t, "sleep", "100000"), job.SubmitOptions{}, r); err != nil {
			t.Fatal(err)
		}
		await(t, r.started, "Start")
		_, id, _, _ := r.seen()
		if err := srv.DropConnections(); err != nil {
			t.Fatal(err)
		}
		await(t, r.done, "Done after the connection was lost")
		if calls, _, _, err := r.seen(); calls != "id start done" || !errors.Is(err, flux.ErrDisconnected) {
			t.Fatalf("after a lost connection: calls %q, Done error %v; want id start done, a connection error", calls, err)
		}
		for e.Err() == nil && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // the worker notices the loss
		}
		if err := e.AttachLean(ctx, id, newRecorder()); !errors.Is(err, ErrBroken) {
			t.Fatalf("AttachLean on a broken executor = %v, want ErrBroken", err)
		}

		e2 := newTestExecutor(t, srv, execConfig{src: src})
		r2 := newRecorder()
		if err := e2.AttachLean(ctx, id, r2); err != nil {
			t.Fatal(err)
		}
		await(t, r2.started, "Start replayed on attach")
		if err := job.Cancel(ctx, client(t, srv), id, "enough"); err != nil {
			t.Fatal(err)
		}
		await(t, r2.done, "Done after re-attaching")
		calls, got, _, err := r2.seen()
		var je *JobException
		if calls != "id start done" || got != id || !errors.As(err, &je) || je.Type != "cancel" {
			t.Fatalf("re-attached: calls %q, ID %v, Done error %v; want id start done, %v, a cancel exception", calls, got, err, id)
		}

		r3 := newRecorder()
		if err := e2.AttachLean(ctx, 123456789, r3); err != nil {
			t.Fatal(err)
		}
		await(t, r3.done, "Done of an unknown job")
		if calls, _, _, err := r3.seen(); calls != "id done" || !errors.Is(err, ErrNoSuchJob) {
			t.Fatalf("unknown job: calls %q, Done error %v", calls, err)
		}
	})
}

// A lean future keeps no events, queues nothing once its calls ran and
// takes nothing from the executor's event budget, held or ended; a
// normal future of the same jobs does keep them (so the counts can fail).
func TestLeanFutureKeepsNoEvents(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		ctx := testCtx(t)
		e := newTestExecutor(t, srv, execConfig{src: src})
		hold := 0
		var held, ended []*Future
		var heldR []*recorder
		for i := 0; i < 20; i++ {
			r := newRecorder()
			f, err := e.submitLean(ctx, spec(t, "true"), job.SubmitOptions{Urgency: &hold}, r)
			if err != nil {
				t.Fatal(err)
			}
			held, heldR = append(held, f), append(heldR, r)
			r = newRecorder()
			f, err = e.submitLean(ctx, spec(t, "true"), job.SubmitOptions{}, r)
			if err != nil {
				t.Fatal(err)
			}
			ended = append(ended, f)
			await(t, r.done, "Done")
		}
		normal := submit(t, e, "true")
		if _, err := normal.Result(ctx); err != nil {
			t.Fatal(err)
		}
		c := client(t, srv)
		t.Cleanup(func() { // before the executor's shutdown, which waits for them
			for _, r := range heldR {
				if _, id, _, _ := r.seen(); id != 0 {
					_ = job.Cancel(ctx, c, id, "done")
				}
			}
		})
		// wait for the events a held job gets (submit ... priority)
		for _, r := range heldR {
			id := waitLeanID(t, r)
			if err := waitPriority(ctx, c, id); err != nil {
				t.Fatal(err)
			}
		}
		retained := func(f *Future) string {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.history == nil {
				return fmt.Sprintf("no history, %d queued", len(f.queue))
			}
			return fmt.Sprintf("%d events, %d charges, %d queued, %d callbacks, charge %v, context cost %d",
				len(f.events), len(f.charges), len(f.queue), len(f.eventCBs)+len(f.jobidCBs)+len(f.doneCBs), f.charge != nil, f.ctxCost)
		}
		const none = "no history, 0 queued"
		for i, f := range append(held, ended...) {
			if got := retained(f); got != none {
				t.Fatalf("lean future %d keeps %s", i, got)
			}
		}
		if got := retained(normal); got == none {
			t.Fatalf("a normal future kept %s: the count cannot tell", got)
		}
		normal = nil
		if used := e.budget.used.Load(); used != 0 {
			t.Fatalf("lean futures took %d bytes of the event budget", used)
		}
	})
}

// waitPriority waits until job id's eventlog has its priority event (the
// last event of a held job).
func waitPriority(ctx context.Context, c *flux.Conn, id job.ID) error {
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if err != nil {
			return fmt.Errorf("job %v: no priority event: %w", id, err)
		}
		if ev.Name == job.EventPriority {
			return nil
		}
	}
}
