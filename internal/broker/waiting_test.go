package broker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestWaitingReads: an instance's Waiting is read only once asked for,
// at most once per WaitingPace, sees a queue stopped with its reason, and
// a broker that does not answer gets no second read (the Waiting says so).
func TestWaitingReads(t *testing.T) {
	b := testbroker.New(testbroker.Options{Queues: []string{"batch", "debug"}, DefaultQueue: "batch"})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := NewConnector(ConnectorOptions{
		URI: b.URI(), Workers: 1,
		Backoff:       wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 100 * time.Millisecond},
		CheckInterval: 10 * time.Millisecond, ShutdownTimeout: time.Second,
	})
	c.waiting.timeout = time.Second
	var mu sync.Mutex
	var reads []Waiting
	c.setWaitingHook(func(_, w Waiting) {
		mu.Lock()
		reads = append(reads, w)
		mu.Unlock()
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(reads)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitUntil(t, "connected", func() bool { return c.Ready(nil) == nil })
	_, ctl, _ := c.Get()
	// A read is only made for a FluxJob that waits: the connection's
	// first seconds bring none.
	ping := map[string]any{"seq": 1}
	for i := 0; i < 20; i++ {
		if err := ctl.RPC(ctx, "broker.ping", ping, nil); err != nil { // a round trip through the connection
			t.Fatal(err)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("%d reads before any FluxJob waited", n)
	}
	if w := c.Waiting(time.Now(), -1); w.Read() {
		t.Fatalf("a read before the first: %+v", w)
	}
	waitUntil(t, "first read", func() bool { return count() >= 1 })
	w := c.Waiting(time.Now(), -1)
	if w.Err != "" || len(w.Queues) != 2 || !w.Queues["batch"].Started || !w.Queues["debug"].Started {
		t.Fatalf("first read %+v", w)
	}
	stopQueue(t, ctl, "debug", "maintenance window")
	waitUntil(t, "the stop read", func() bool {
		return c.Waiting(time.Now(), -1).Queues["debug"] == QueueState{Enabled: true, StopReason: "maintenance window"}
	})
	// Between two answered reads, at least the pace (an overdue read is
	// reported before its answer: that report is not a read).
	mu.Lock()
	var answered []Waiting
	for _, r := range reads {
		if !strings.Contains(r.Err, "no answer") {
			answered = append(answered, r)
		}
	}
	for i := 1; i < len(answered); i++ {
		if gap := answered[i].At.Sub(answered[i-1].At); gap < WaitingPace {
			t.Errorf("reads %d and %d %s apart, less than the pace %s", i-1, i, gap, WaitingPace)
		}
	}
	mu.Unlock()

	b.SetResponseDelay(time.Hour)
	waitUntil(t, "an overdue read reported", func() bool {
		return strings.Contains(c.Waiting(time.Now(), -1).Err, "no answer from the broker")
	})
	n := count()
	time.Sleep(3 * WaitingPace)
	if got := count(); got != n {
		t.Errorf("%d more reads while one was unanswered", got-n)
	}
}

func stopQueue(t *testing.T, c *flux.Conn, name, reason string) {
	t.Helper()
	req := map[string]any{"name": name, "start": false, "reason": reason, "all": false}
	if err := c.RPC(context.Background(), "job-manager.queue-start", req, nil); err != nil {
		t.Fatal(err)
	}
}

// TestPokeWaiting: a read pokes the FluxJobs waiting in SCHED on the
// instance whose input changed, not a running one, not one on another
// instance.
func TestPokeWaiting(t *testing.T) {
	tr := NewTracker(16)
	sched := []job.Event{{Name: "submit", Context: map[string]any{"urgency": 16.0}}, {Name: "validate"}, {Name: "depend"},
		{Name: "priority", Context: map[string]any{"priority": 16.0}}}
	add := func(instance, name string, id uint64, evs []job.Event) {
		uid := types.UID(name)
		tok := tr.BeginOn(instance, uid, types.NamespacedName{Namespace: "ns", Name: name}, true)
		tr.SetJobID(uid, tok, id)
		for i, ev := range evs {
			ev.Timestamp = float64(100 + i)
			tr.AddEvent(uid, tok, ev)
		}
	}
	add("a", "waits", 1, sched)
	add("a", "waits-too", 2, sched)
	add("a", "runs", 3, append(sched, job.Event{Name: "alloc"}))
	add("b", "elsewhere", 4, sched)
	drain := func() map[string]bool {
		got := map[string]bool{}
		for {
			select {
			case ev := <-tr.Events():
				got[ev.Object.GetName()] = true
			default:
				return got
			}
		}
	}
	drain()
	old := Waiting{At: time.Unix(1, 0), Queues: map[string]QueueState{"": {Enabled: true, Started: true}}, Jobs: map[job.ID]SchedInfo{1: {}, 2: {}}}
	estimate := Waiting{At: time.Unix(2, 0), Queues: old.Queues, Jobs: map[job.ID]SchedInfo{1: {TEstimate: 5}, 2: {}}}
	if n := tr.PokeWaiting("a", old, estimate); n != 1 {
		t.Errorf("poked %d for one job's estimate, want 1", n)
	}
	if got := drain(); !got["waits"] || len(got) != 1 {
		t.Errorf("poked %v, want waits", got)
	}
	stopped := Waiting{At: time.Unix(3, 0), Queues: map[string]QueueState{"": {Enabled: true}}, Jobs: estimate.Jobs}
	tr.PokeWaiting("a", estimate, stopped)
	if got := drain(); !got["waits"] || !got["waits-too"] || len(got) != 2 {
		t.Errorf("queue stopped: poked %v, want waits and waits-too", got)
	}
	if n := tr.PokeWaiting("a", stopped, stopped); n != 0 {
		t.Errorf("poked %d for an unchanged read", n)
	}
}
