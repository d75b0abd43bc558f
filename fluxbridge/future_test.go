package fluxbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// These tests drive a Future directly, the way the executor does, like
// the TestFluxExecutorFuture and synchronous TestFluxExecutorThread cases
// of flux-core's t/python/t0023-executor.py.

func testFuture(t *testing.T) *Future {
	t.Helper()
	l := logr.Discard()
	return newFuture(&l, nil, nil)
}

func event(name string, ctx map[string]any) job.Event {
	return job.Event{Timestamp: 0, Name: name, Context: ctx}
}

// post delivers an event the way a worker does.
func post(f *Future, ev job.Event) {
	f.handleEvent(ev)
	f.runCallbacks(0)
}

func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// Python: TestFluxExecutorFuture.test_set_jobid
func TestFutureSetJobID(t *testing.T) {
	for _, id := range []job.ID{21, 594240, 1 << 60} {
		f := testFuture(t)
		if _, err := f.JobID(expired()); !errors.Is(err, context.Canceled) {
			t.Fatalf("JobID before set: err = %v, want context.Canceled", err)
		}
		if err := f.setJobID(id); err != nil {
			t.Fatal(err)
		}
		got, err := f.JobID(expired())
		if err != nil || got != id {
			t.Fatalf("JobID = %v, %v; want %v", got, err, id)
		}
		if err := f.setJobID(id); err == nil {
			t.Fatal("setting the job ID twice succeeded")
		}
	}
}

// Python: TestFluxExecutorFuture.test_jobid_unavailable
func TestFutureJobIDUnavailable(t *testing.T) {
	ctx := context.Background()
	// cancelled before the ID is set
	f := testFuture(t)
	if !f.Cancel() {
		t.Fatal("Cancel of a pending future failed")
	}
	if _, err := f.JobID(ctx); !errors.Is(err, ErrCancelled) {
		t.Fatalf("JobID of cancelled future: %v, want ErrCancelled", err)
	}
	// cancelled after the ID is set: the ID stays available
	f = testFuture(t)
	if err := f.setJobID(10); err != nil {
		t.Fatal(err)
	}
	f.Cancel()
	if id, err := f.JobID(ctx); err != nil || id != 10 {
		t.Fatalf("JobID = %v, %v; want 10", id, err)
	}
	// an error before the ID is set
	f = testFuture(t)
	f.setRunning()
	cause := errors.New("foobar")
	f.setException(cause)
	f.runCallbacks(0)
	_, err := f.JobID(ctx)
	var se *SubmitError
	if !errors.As(err, &se) || !errors.Is(err, cause) || !strings.Contains(err.Error(), "job could not be submitted") {
		t.Fatalf("JobID after exception: %v, want *SubmitError wrapping %v", err, cause)
	}
	if err := f.setJobID(1); err == nil {
		t.Fatal("setJobID after the ID was settled succeeded")
	}
}

// Python: TestFluxExecutorFuture.test_jobid_callback
func TestFutureJobIDCallback(t *testing.T) {
	f := testFuture(t)
	calls := 0
	f.AddJobIDCallback(func(*Future) { calls++ })
	if calls != 0 {
		t.Fatal("job ID callback ran before the ID was set")
	}
	if err := f.setJobID(5); err != nil {
		t.Fatal(err)
	}
	f.runCallbacks(0)
	if calls != 1 {
		t.Fatalf("calls = %d after setJobID, want 1", calls)
	}
	f.AddJobIDCallback(func(*Future) { calls++ })
	if calls != 2 {
		t.Fatalf("callback added after the ID was set did not run at once (calls = %d)", calls)
	}
}

// Python: TestFluxExecutorFuture.test_event_callback
func TestFutureEventCallback(t *testing.T) {
	f := testFuture(t)
	for _, name := range []string{"clean", "start", "alloc"} {
		var got []string
		cb := func(_ *Future, ev job.Event) { got = append(got, ev.Name) }
		if err := f.AddEventCallback(name, cb); err != nil {
			t.Fatal(err)
		}
		post(f, event(name, nil))
		if len(got) != 1 || got[0] != name {
			t.Fatalf("%s: callback got %v", name, got)
		}
		// adding a callback for an event that already happened replays it
		if err := f.AddEventCallback(name, cb); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[1] != name {
			t.Fatalf("%s: replay got %v", name, got)
		}
	}
}

// Python: TestFluxExecutorFuture.test_bad_event
func TestFutureBadEvent(t *testing.T) {
	f := testFuture(t)
	err := f.AddEventCallback("not an event", func(*Future, job.Event) {})
	if !errors.Is(err, ErrUnknownEvent) {
		t.Fatalf("AddEventCallback(unknown) = %v, want ErrUnknownEvent", err)
	}
	// an event outside the set is not recorded nor delivered
	post(f, event("not an event", nil))
	if len(f.events) != 0 {
		t.Fatalf("unknown event recorded: %v", f.events)
	}
}

func TestEventsSet(t *testing.T) {
	want := []string{"urgency", "start", "depend", "flux-restart", "clean", "submit",
		"priority", "exception", "finish", "free", "alloc", "debug", "release"}
	if len(Events) != len(want) {
		t.Fatalf("len(Events) = %d, want %d", len(Events), len(want))
	}
	for _, n := range want {
		if !IsEvent(n) {
			t.Errorf("%q missing from Events", n)
		}
	}
}

// Python: TestFluxExecutorFuture.test_callback_deadlock
func TestFutureCallbackDeadlock(t *testing.T) {
	ctx := context.Background()
	f := testFuture(t)
	var errs []error
	record := func(f *Future) {
		_, err := f.Result(ctx)
		errs = append(errs, err)
		_, err = f.JobID(ctx)
		errs = append(errs, err)
		errs = append(errs, f.Exception(ctx))
	}
	f.AddJobIDCallback(record) // JobID is known here: only Result/Exception fail
	if err := f.setJobID(5); err != nil {
		t.Fatal(err)
	}
	f.runCallbacks(0)
	if !errors.Is(errs[0], ErrCallbackDeadlock) || errs[1] != nil || !errors.Is(errs[2], ErrCallbackDeadlock) {
		t.Fatalf("jobid callback: errs = %v", errs)
	}
	errs = nil
	if err := f.AddEventCallback("debug", func(f *Future, _ job.Event) { record(f) }); err != nil {
		t.Fatal(err)
	}
	post(f, event("debug", nil))
	if !errors.Is(errs[0], ErrCallbackDeadlock) || !errors.Is(errs[2], ErrCallbackDeadlock) {
		t.Fatalf("event callback: errs = %v", errs)
	}
	// waiting from another goroutine is not refused
	resCh := make(chan error, 1)
	go func() { _, err := f.Result(ctx); resCh <- err }()
	// complete the future: callbacks may now wait, it is done
	f.setRunning()
	f.setResult(21)
	f.runCallbacks(0)
	if err := <-resCh; err != nil {
		t.Fatalf("Result from another goroutine: %v", err)
	}
	var got int
	var gotErr error
	f.AddJobIDCallback(func(f *Future) { got, gotErr = f.Result(ctx) })
	if got != 21 || gotErr != nil {
		t.Fatalf("Result in callback of done future = %d, %v", got, gotErr)
	}
	gotErr = errors.New("unset")
	if err := f.AddEventCallback("debug", func(f *Future, _ job.Event) { gotErr = f.Exception(ctx) }); err != nil {
		t.Fatal(err)
	}
	if gotErr != nil {
		t.Fatalf("Exception in event callback of done future = %v", gotErr)
	}
}

// The deadlock guard also covers a future captured by a closure, and does
// not leak to other futures' callbacks.
func TestFutureCallbackDeadlockClosure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := testFuture(t), testFuture(t)
	var errA, errB error
	a.AddJobIDCallback(func(*Future) {
		_, errA = a.Result(ctx) // a's own callback: refused
		_, errB = b.JobID(ctx)  // another future: waits normally
	})
	if err := b.setJobID(2); err != nil {
		t.Fatal(err)
	}
	if err := a.setJobID(1); err != nil {
		t.Fatal(err)
	}
	a.runCallbacks(0)
	if !errors.Is(errA, ErrCallbackDeadlock) || errB != nil {
		t.Fatalf("errA = %v, errB = %v", errA, errB)
	}
}

// Python: TestFluxExecutorFuture.test_multiple_events
func TestFutureMultipleEvents(t *testing.T) {
	f := testFuture(t)
	first, second := 0, 0
	if err := f.AddEventCallback("urgency", func(*Future, job.Event) { first++ }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		post(f, event("urgency", map[string]any{"urgency": float64(i)}))
	}
	if first != 5 {
		t.Fatalf("first = %d, want 5", first)
	}
	if err := f.AddEventCallback("urgency", func(*Future, job.Event) { second++ }); err != nil {
		t.Fatal(err)
	}
	if second != 5 {
		t.Fatalf("replay: second = %d, want 5", second)
	}
	post(f, event("urgency", nil))
	if first != 6 || second != 6 {
		t.Fatalf("first, second = %d, %d; want 6, 6", first, second)
	}
}

// Python: TestFluxExecutorFuture.test_adding_callbacks_from_callbacks
func TestFutureAddingCallbacksFromCallbacks(t *testing.T) {
	f := testFuture(t)
	nested := false
	err := f.AddEventCallback("start", func(f *Future, _ job.Event) {
		if err := f.AddEventCallback("start", func(*Future, job.Event) { nested = true }); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	post(f, event("start", nil))
	if !nested {
		t.Fatal("callback added from a callback did not run")
	}
}

// Python: TestFluxExecutorFuture.test_multiple_cancel
func TestFutureMultipleCancel(t *testing.T) {
	f := testFuture(t)
	calls := 0
	f.AddDoneCallback(func(*Future) { calls++ })
	if f.Cancelled() {
		t.Fatal("new future is cancelled")
	}
	for i := 0; i < 3; i++ {
		if !f.Cancel() {
			t.Fatalf("Cancel #%d failed", i)
		}
	}
	if calls != 1 {
		t.Fatalf("done callback ran %d times, want 1", calls)
	}
	if !f.Cancelled() || !f.Done() || f.Running() {
		t.Fatalf("Cancelled, Done, Running = %v, %v, %v", f.Cancelled(), f.Done(), f.Running())
	}
	if _, err := f.JobID(context.Background()); !errors.Is(err, ErrCancelled) {
		t.Fatalf("JobID = %v, want ErrCancelled", err)
	}
	if _, err := f.Result(context.Background()); !errors.Is(err, ErrCancelled) {
		t.Fatalf("Result = %v, want ErrCancelled", err)
	}
}

// Cancel succeeds only before the future runs.
func TestFutureCancelOnlyWhilePending(t *testing.T) {
	f := testFuture(t)
	if !f.setRunning() || !f.Running() {
		t.Fatal("setRunning failed")
	}
	if f.Cancel() || f.Cancelled() {
		t.Fatal("Cancel of a running future succeeded")
	}
	f.setResult(0)
	f.runCallbacks(0)
	if f.Cancel() || f.Running() || !f.Done() {
		t.Fatal("Cancel of a done future succeeded, or state wrong")
	}
	g := testFuture(t)
	g.Cancel()
	if g.setRunning() {
		t.Fatal("setRunning of a cancelled future succeeded")
	}
}

// Python: TestFluxExecutorThread.test_exception_completion
func TestFutureExceptionCompletion(t *testing.T) {
	f := testFuture(t)
	f.setRunning()
	if err := f.setJobID(7); err != nil {
		t.Fatal(err)
	}
	post(f, event("start", nil))
	if f.Done() {
		t.Fatal("done after start")
	}
	post(f, event("exception", map[string]any{"severity": float64(1), "type": "foobar", "note": ""}))
	if f.Done() {
		t.Fatal("done after a severity-1 exception")
	}
	post(f, event("exception", map[string]any{"severity": float64(0), "type": "foobar", "note": "boom"}))
	if !f.Done() {
		t.Fatal("not done after a severity-0 exception")
	}
	var je *JobException
	if err := f.Exception(context.Background()); !errors.As(err, &je) {
		t.Fatalf("Exception = %v, want *JobException", err)
	}
	if je.ID != 7 || je.Type != "foobar" || je.Severity != 0 || je.Note != "boom" {
		t.Fatalf("JobException = %+v", je)
	}
	// a later finish does not change the outcome, but is still delivered
	finished := false
	if err := f.AddEventCallback("finish", func(*Future, job.Event) { finished = true }); err != nil {
		t.Fatal(err)
	}
	post(f, event("finish", map[string]any{"status": float64(0)}))
	post(f, event("clean", nil))
	if _, err := f.Result(context.Background()); !errors.As(err, &je) {
		t.Fatalf("Result after finish = %v, want the JobException", err)
	}
	if !finished {
		t.Fatal("finish callback not called after completion")
	}
}

// Python: TestFluxExecutorThread.test_finish_completion
func TestFutureFinishCompletion(t *testing.T) {
	tests := []struct {
		status  int
		want    int
		wantErr bool
	}{
		{status: 0, want: 0},
		{status: 1 << 8, want: 1},
		{status: 120 << 8, want: 120},
		{status: 36608, want: 143},
		{status: 1, want: -1},
		{status: 15, want: -15},
		{status: 120, want: -120},
		{status: 9 | 0x80, want: -9}, // core dumped
		{status: 255, wantErr: true}, // stopped: neither exited nor signalled
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			f := testFuture(t)
			f.setRunning()
			if err := f.setJobID(1); err != nil {
				t.Fatal(err)
			}
			called := false
			f.AddDoneCallback(func(*Future) { called = true })
			post(f, event("finish", map[string]any{"status": float64(tt.status)}))
			if !f.Done() || !called {
				t.Fatalf("Done = %v, callback called = %v", f.Done(), called)
			}
			got, err := f.Result(context.Background())
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Result = %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// Done callbacks run in order, at once on a done future, and event
// callbacks that precede completion run before Result returns.
func TestFutureDoneCallbackOrder(t *testing.T) {
	f := testFuture(t)
	f.setRunning()
	if err := f.setJobID(3); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, n := range []string{"a", "b", "c"} {
		f.AddDoneCallback(func(*Future) { order = append(order, n) })
	}
	if err := f.AddEventCallback("finish", func(f *Future, _ job.Event) {
		order = append(order, fmt.Sprintf("finish done=%v", f.Done()))
	}); err != nil {
		t.Fatal(err)
	}
	post(f, event("finish", map[string]any{"status": float64(0)}))
	f.AddDoneCallback(func(*Future) { order = append(order, "late") })
	want := "finish done=false a b c late"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("order = %q, want %q", got, want)
	}
	select {
	case <-f.DoneChan():
	default:
		t.Fatal("DoneChan not closed")
	}
	if err := f.Wait(expired()); err != nil {
		t.Fatalf("Wait on done future: %v", err)
	}
}

// A panicking callback is logged with the job ID and the others still run.
func TestFutureCallbackPanic(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	l := funcr.New(func(prefix, args string) {
		mu.Lock()
		logs = append(logs, args)
		mu.Unlock()
	}, funcr.Options{})
	f := newFuture(&l, nil, nil)
	f.setRunning()
	if err := f.setJobID(42); err != nil {
		t.Fatal(err)
	}
	ran := 0
	f.AddDoneCallback(func(*Future) { panic("boom") })
	f.AddDoneCallback(func(*Future) { ran++ })
	if err := f.AddEventCallback("start", func(*Future, job.Event) { panic("event boom") }); err != nil {
		t.Fatal(err)
	}
	if err := f.AddEventCallback("start", func(*Future, job.Event) { ran++ }); err != nil {
		t.Fatal(err)
	}
	post(f, event("start", nil))
	post(f, event("finish", map[string]any{"status": float64(0)}))
	if ran != 2 {
		t.Fatalf("callbacks after the panicking ones ran %d times, want 2", ran)
	}
	if r, err := f.Result(context.Background()); r != 0 || err != nil {
		t.Fatalf("Result = %d, %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 2 {
		t.Fatalf("logged %d lines, want 2: %q", len(logs), logs)
	}
	for _, s := range logs {
		if !strings.Contains(s, `"jobid"`) || !strings.Contains(s, "boom") {
			t.Errorf("log line lacks jobid or panic value: %s", s)
		}
	}
}

// Concurrent registration and delivery give every (callback, event) pair
// exactly one call, in event order per callback.
func TestFutureConcurrentCallbacks(t *testing.T) {
	f := testFuture(t)
	f.setRunning()
	// as many events as a Future keeps to replay (it drops events
	// beyond MaxStoredEvents, see TestFutureEventBounds)
	const n = MaxStoredEvents
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := make([][]float64, 10)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			post(f, job.Event{Timestamp: float64(i), Name: "urgency"})
		}
	}()
	for c := range seen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.AddEventCallback("urgency", func(_ *Future, ev job.Event) {
				mu.Lock()
				seen[c] = append(seen[c], ev.Timestamp)
				mu.Unlock()
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	f.runCallbacks(0)
	for c, s := range seen {
		if len(s) != n {
			t.Fatalf("callback %d saw %d events, want %d", c, len(s), n)
		}
		for i, ts := range s {
			if ts != float64(i) {
				t.Fatalf("callback %d: event %d has timestamp %v", c, i, ts)
			}
		}
	}
}

// TestFuturePumpOrder: events reach a future's queue while its callbacks
// run (the reader goroutine does not wait for them); the done callbacks
// still run right after the finish event's callbacks, before later
// events' callbacks, and a retirement queued last runs last. Completions
// and retirements need no goroutine; a callback does.
func TestFuturePumpOrder(t *testing.T) {
	f := testFuture(t)
	var order []string
	for _, name := range []string{"finish", "release", "clean"} {
		if err := f.AddEventCallback(name, func(_ *Future, ev job.Event) { order = append(order, ev.Name) }); err != nil {
			t.Fatal(err)
		}
	}
	f.AddDoneCallback(func(*Future) { order = append(order, "done") })
	if err := f.setJobID(7); err != nil {
		t.Fatal(err)
	}
	f.handleEvent(event("finish", map[string]any{"status": 0.0}))
	f.handleEvent(event("release", nil))
	f.handleEvent(event("clean", nil))
	f.queueRetire(func() { order = append(order, "retired") })
	if !f.pumpInternal() {
		t.Fatal("pumpInternal ran with callbacks queued: want a goroutine asked for")
	}
	if f.pumpInternal() {
		t.Fatal("a second pump claimed the dispatching too")
	}
	f.dispatch(goroutineID())
	want := "finish done release clean retired"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("order = %q, want %q", got, want)
	}

	// Without callbacks everything runs in the pumping goroutine.
	g := testFuture(t)
	retired := false
	if err := g.setJobID(8); err != nil {
		t.Fatal(err)
	}
	g.handleEvent(event("finish", map[string]any{"status": 256.0}))
	g.queueRetire(func() { retired = true })
	if g.pumpInternal() {
		t.Fatal("pumpInternal asked for a goroutine with no callback queued")
	}
	if r, err := g.Result(expired()); r != 1 || err != nil || !retired {
		t.Fatalf("Result = %d, %v; retired %v", r, err, retired)
	}
}

// AddAllEventsCallback gets every exposed event (Events and WaitEvents),
// past ones replayed in order, interleaved with per-name callbacks in
// registration order; other names are not delivered.
func TestFutureAllEventsCallback(t *testing.T) {
	f := testFuture(t)
	var got []string
	post(f, event("submit", nil))
	post(f, event("memo", nil)) // in neither
	post(f, event("validate", nil))
	f.AddAllEventsCallback(func(_ *Future, ev job.Event) { got = append(got, "all:"+ev.Name) })
	if err := f.AddEventCallback("alloc", func(_ *Future, ev job.Event) { got = append(got, "one:"+ev.Name) }); err != nil {
		t.Fatal(err)
	}
	post(f, event("depend", nil))
	post(f, event("alloc", nil))
	if err := f.AddEventCallback("validate", nil); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("AddEventCallback(validate): %v, want ErrUnknownEvent", err)
	}
	want := "all:submit all:validate all:depend all:alloc one:alloc"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("calls %q, want %q", s, want)
	}
}

// TestFutureLateCallbackWhileDispatching: a callback added after the fact
// has been called when the Add call returns, as the contract says ("called
// immediately"), even while another goroutine is running the future's
// callbacks; it is then run by that goroutine, after what it runs, so the
// future's callbacks stay one at a time.
func TestFutureLateCallbackWhileDispatching(t *testing.T) {
	adds := []struct {
		name string
		add  func(f *Future, called func())
	}{
		{"event replay", func(f *Future, called func()) {
			if err := f.AddEventCallback("submit", func(*Future, job.Event) { called() }); err != nil {
				t.Error(err)
			}
		}},
		{"all events replay", func(f *Future, called func()) {
			var once sync.Once
			f.AddAllEventsCallback(func(*Future, job.Event) { once.Do(called) })
		}},
		{"done", func(f *Future, called func()) { f.AddDoneCallback(func(*Future) { called() }) }},
		{"job ID", func(f *Future, called func()) { f.AddJobIDCallback(func(*Future) { called() }) }},
	}
	for _, tc := range adds {
		t.Run(tc.name, func(t *testing.T) {
			f := testFuture(t)
			f.setRunning()
			if err := f.setJobID(1); err != nil {
				t.Fatal(err)
			}
			post(f, event("submit", nil))
			post(f, event("finish", map[string]any{"status": 0.0}))
			entered, release := make(chan struct{}), make(chan struct{})
			if err := f.AddEventCallback("clean", func(*Future, job.Event) {
				close(entered)
				<-release
			}); err != nil {
				t.Fatal(err)
			}
			busy := make(chan struct{})
			go func() { defer close(busy); post(f, event("clean", nil)) }() // this goroutine dispatches
			<-entered
			var mu sync.Mutex
			called := false
			calledAtReturn := make(chan bool, 1)
			go func() {
				tc.add(f, func() { mu.Lock(); called = true; mu.Unlock() })
				mu.Lock()
				calledAtReturn <- called
				mu.Unlock()
			}()
			// Release the busy callback once Add waits for it (its
			// marker is queued), or as soon as Add has returned.
			var got bool
			waiting := false
			for !waiting {
				select {
				case got = <-calledAtReturn:
					waiting = true // returned without waiting: got says whether it had run
					calledAtReturn <- got
				case <-time.After(time.Millisecond):
					f.mu.Lock()
					waiting = len(f.queue) > 0 && f.queue[len(f.queue)-1].retire != nil
					f.mu.Unlock()
				}
			}
			close(release)
			if !<-calledAtReturn {
				t.Error("the late callback had not been called when Add returned")
			}
			<-busy
		})
	}
}
