package fluxbridge

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// TestFutureEventBounds: whatever the broker sends for one job, a Future
// keeps at most MaxStoredEvents events, their contexts within
// MaxStoredContextCost (plus essential members), and at most
// MaxQueuedEvents waiting callback calls; lifecycle events survive and
// the outcome is still read from them.
func TestFutureEventBounds(t *testing.T) {
	bigCtx := func() map[string]any {
		m := map[string]any{"note": strings.Repeat("n", 3000)}
		for i := range 200 {
			m[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("x", i)] = []any{float64(i), "abc"}
		}
		return m
	}
	tests := []struct {
		name string
		// flood posts the hostile events; the Future has a slow callback
		// when slow is set
		flood func(f *Future)
		slow  bool
	}{
		{"endless priority events", func(f *Future) {
			for i := range 10000 {
				f.handleEvent(event("priority", map[string]any{"priority": float64(i)}))
			}
		}, false},
		{"huge contexts", func(f *Future) {
			for range 1000 {
				f.handleEvent(event("debug", bigCtx()))
			}
		}, false},
		{"non-fatal exceptions forever", func(f *Future) {
			for range 5000 {
				f.handleEvent(event("exception", map[string]any{"type": "x", "severity": float64(1), "note": strings.Repeat("y", 5000)}))
			}
		}, false},
		{"events faster than the callback", func(f *Future) {
			for i := range 10000 {
				f.handleEvent(event("urgency", map[string]any{"urgency": float64(i % 32)}))
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testFuture(t)
			if err := f.setJobID(42); err != nil {
				t.Fatal(err)
			}
			var (
				mu     sync.Mutex
				seen   []string
				block  = make(chan struct{})
				gotFin = make(chan struct{})
			)
			f.AddAllEventsCallback(func(_ *Future, ev job.Event) {
				if tt.slow {
					<-block
				}
				mu.Lock()
				seen = append(seen, ev.Name)
				mu.Unlock()
				if ev.Name == "finish" {
					close(gotFin)
				}
			})
			f.handleEvent(event("submit", map[string]any{"userid": float64(1), "urgency": float64(16), "flags": float64(0)}))
			f.handleEvent(event("start", nil))
			if tt.slow {
				// the callback goroutine takes the first call and blocks
				go f.runCallbacks(0)
			}
			tt.flood(f)
			f.handleEvent(event("finish", map[string]any{"status": float64(256), "junk": strings.Repeat("j", 1<<16)}))
			f.mu.Lock()
			nev, nq, cost := len(f.events), len(f.queue), 0
			names := map[string]bool{}
			for _, ev := range f.events {
				cost += job.ContextCost(ev.Context)
				names[ev.Name] = true
			}
			f.mu.Unlock()
			if nev > MaxStoredEvents {
				t.Errorf("%d events stored, bound %d", nev, MaxStoredEvents)
			}
			if nq > MaxQueuedEvents+4 {
				t.Errorf("%d callback calls queued, bound %d", nq, MaxQueuedEvents)
			}
			if cost > MaxStoredContextCost+MaxStoredEvents*(MaxEventContextCost/2) {
				t.Errorf("stored contexts cost %d bytes", cost)
			}
			for _, n := range []string{"submit", "start", "finish"} {
				if !names[n] {
					t.Errorf("lifecycle event %q dropped", n)
				}
			}
			if f.EventsDropped() == 0 {
				t.Error("EventsDropped = 0")
			}
			close(block)
			f.runCallbacks(0)
			<-gotFin
			// The completion is queued behind the finish callbacks, so in the
			// slow case the dispatching goroutine may still be running it.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if res, err := f.Result(ctx); err != nil || res != 1 {
				t.Errorf("Result = %d, %v; want exit code 1", res, err)
			}
		})
	}
}

// TestJournalSourceBounds: whatever the events journal sends, the journal
// source keeps at most maxJournalOrphans unclaimed jobs, maxHeldEvents
// events per orphan and per job it cannot deliver to yet, and clipped
// contexts.
func TestJournalSourceBounds(t *testing.T) {
	newSource := func() *journalSource {
		s := &journalSource{
			inflight: map[*submitTicket]struct{}{{}: {}}, // a submission in flight
			orphans:  map[job.ID]*journalOrphan{},
			subs:     map[job.ID]*journalSub{},
			claimed:  map[job.ID]*journalSub{},
		}
		return s
	}
	huge := map[string]any{"note": strings.Repeat("n", 1<<16)}
	for i := range 2000 {
		huge[strings.Repeat("k", 8)+string(rune('a'+i%26))+strings.Repeat("x", i%50)+string(rune('0'+i/50%10))] = []any{float64(i)}
	}
	tests := []struct {
		name  string
		feed  func(s *journalSource)
		check func(t *testing.T, s *journalSource)
	}{
		{"new jobs without end", func(s *journalSource) {
			for i := range maxJournalOrphans + 5000 {
				s.dispatch(job.JournalEntry{ID: job.ID(i + 1), Events: []job.Event{event("submit", nil)}})
			}
		}, func(t *testing.T, s *journalSource) {
			if n := len(s.orphans); n > maxJournalOrphans {
				t.Errorf("%d orphans, bound %d", n, maxJournalOrphans)
			}
		}},
		{"endless events of one new job", func(s *journalSource) {
			s.dispatch(job.JournalEntry{ID: 7, Events: []job.Event{event("submit", nil)}})
			for i := range 10000 {
				s.dispatch(job.JournalEntry{ID: 7, Events: []job.Event{event("priority", map[string]any{"priority": float64(i)})}})
			}
			s.dispatch(job.JournalEntry{ID: 7, Events: []job.Event{event("debug", huge)}})
		}, func(t *testing.T, s *journalSource) {
			o := s.orphans[7]
			if o == nil {
				t.Fatal("no orphan")
			}
			if len(o.events) > maxHeldEvents || o.events[0].Name != "submit" {
				t.Fatalf("orphan holds %d events (bound %d), the first %q", len(o.events), maxHeldEvents, o.events[0].Name)
			}
			if c := job.ContextCost(o.events[len(o.events)-1].Context); c > MaxEventContextCost+2*job.MaxClippedString {
				t.Errorf("held context costs %d", c)
			}
		}},
		{"events held for a job not followed yet", func(s *journalSource) {
			s.addLocked(9, &journalSub{id: 9})
			for i := range 10000 {
				s.dispatch(job.JournalEntry{ID: 9, Events: []job.Event{event("urgency", map[string]any{"urgency": float64(i % 32)})}})
			}
		}, func(t *testing.T, s *journalSource) {
			if n := len(s.subs[9].held); n > maxHeldEvents {
				t.Errorf("%d events held, bound %d", n, maxHeldEvents)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSource()
			tt.feed(s)
			tt.check(t, s)
		})
	}
}

// TestEventBudget: many Futures of one executor, each fed a job's usual
// eventlog and then an endless stream of repeatable events (priority
// events, as BenchmarkManagerHostileBroker's endless-stream broker sends
// to every job). Jobs that behave take nothing from the executor's budget;
// the stream takes it all and no more, whatever the number of jobs; every
// Future still keeps its lifecycle events and reads its outcome; and the
// budget comes back once the Futures are gone.
func TestEventBudget(t *testing.T) {
	const jobs = 10000
	b := newEventBudget(1 << 20)
	l := logr.Discard()
	usual := []job.Event{
		event("submit", map[string]any{"userid": float64(1), "urgency": float64(16), "flags": float64(0), "version": float64(1)}),
		event("validate", nil),
		event("depend", nil),
		event("priority", map[string]any{"priority": float64(16)}),
		event("alloc", map[string]any{"annotations": map[string]any{"sched": map[string]any{"resource_summary": "rank0/core0"}}}),
		event("start", nil),
	}
	futures := make([]*Future, jobs)
	for i := range futures {
		f := newFuture(&l, b, nil)
		if err := f.setJobID(job.ID(i + 1)); err != nil {
			t.Fatal(err)
		}
		for _, ev := range usual {
			f.handleEvent(ev)
		}
		futures[i] = f
	}
	if used := b.used.Load(); used != 0 {
		t.Fatalf("%d jobs with a usual eventlog took %d bytes of the budget, want 0", jobs, used)
	}
	for _, f := range futures {
		for i := range 50 {
			f.handleEvent(event("priority", map[string]any{"priority": float64(i), "pad": strings.Repeat("p", 200)}))
		}
		f.handleEvent(event("finish", map[string]any{"status": float64(0)}))
		f.runCallbacks(0)
	}
	if used := b.used.Load(); used > b.max {
		t.Fatalf("the budget holds %d bytes, over its %d", used, b.max)
	}
	kept := 0
	for i, f := range futures {
		f.mu.Lock()
		names := map[string]bool{}
		for _, ev := range f.events {
			names[ev.Name] = true
		}
		kept += len(f.events)
		f.mu.Unlock()
		for _, n := range []string{"submit", "alloc", "start", "finish"} {
			if !names[n] {
				t.Fatalf("future %d lost its %q event", i, n)
			}
		}
		if res, err := f.Result(expired()); err != nil || res != 0 {
			t.Fatalf("future %d: Result = %d, %v", i, res, err)
		}
	}
	if limit := jobs*(len(usual)+1) + int(b.max)/eventOverhead; kept > limit {
		t.Fatalf("%d events kept by %d futures, want at most %d", kept, jobs, limit)
	}
	if futures[jobs-1].EventsDropped() == 0 {
		t.Error("the last future dropped nothing: the budget did not bind")
	}
	futures = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for b.used.Load() != 0 {
		runtime.GC()
		select {
		case <-ctx.Done():
			t.Fatalf("%d bytes of the budget still held after the futures were dropped", b.used.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestEventBitsDistinct: every recorded event name (Events and
// WaitEvents) has a bit of its own in Future.seen, so that a validate or
// dependency-add seen first does not make alloc or start look seen (and
// lose their free, never-refused first copy).
func TestEventBitsDistinct(t *testing.T) {
	seen := map[uint8]string{}
	for _, set := range []map[string]struct{}{Events, WaitEvents} {
		for name := range set {
			b, ok := eventBits[name]
			if !ok {
				t.Errorf("%s has no bit", name)
			}
			if other, dup := seen[b]; dup {
				t.Errorf("%s and %s share bit %d", name, other, b)
			}
			seen[b] = name
		}
	}
}
