package broker

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

func TestTrackerTokenGuardsStaleFutures(t *testing.T) {
	tr := NewTracker(8)
	uid, key := types.UID("u1"), types.NamespacedName{Namespace: "ns", Name: "a"}
	old := tr.Begin(uid, key, true)
	tr.SetJobID(uid, old, 42)
	cur := tr.Begin(uid, key, false) // re-attach after a lost connection
	tr.Finish(uid, old, Outcome{Kind: OutcomeLost})
	tr.AddEvent(uid, old, job.Event{Name: "start"})
	obs, ok := tr.Get(uid)
	if !ok {
		t.Fatal("uid not tracked")
	}
	if obs.Token != cur || obs.HasJobID || obs.Done() || len(obs.Events) != 0 {
		t.Fatalf("stale future changed the new View: %+v", obs)
	}
	if !obs.SubmittedAt.IsZero() {
		t.Fatalf("attach recorded a submit time: %v", obs.SubmittedAt)
	}
	tr.SetJobID(uid, cur, 7)
	tr.Finish(uid, cur, Outcome{Kind: OutcomeExited, ExitCode: 3})
	obs, _ = tr.Get(uid)
	if !obs.HasJobID || obs.JobID != 7 || obs.Outcome.Kind != OutcomeExited || obs.Outcome.ExitCode != 3 {
		t.Fatalf("View = %+v", obs)
	}
}

func TestTrackerNotifiesWithoutBlocking(t *testing.T) {
	tr := NewTracker(2)
	uid, key := types.UID("u1"), types.NamespacedName{Namespace: "ns", Name: "a"}
	tok := tr.Begin(uid, key, true)
	for i := 0; i < 5; i++ { // more than the buffer: must not block
		tr.AddEvent(uid, tok, job.Event{Name: "debug"})
	}
	if got := tr.Dropped(); got != 3 {
		t.Fatalf("Dropped() = %d, want 3", got)
	}
	ev := <-tr.Events()
	if ev.Object.GetNamespace() != "ns" || ev.Object.GetName() != "a" {
		t.Fatalf("notification for %s/%s", ev.Object.GetNamespace(), ev.Object.GetName())
	}
	obs, _ := tr.Get(uid)
	if len(obs.Events) != 5 {
		t.Fatalf("kept %d events, want all 5 despite dropped notifications", len(obs.Events))
	}
}

func TestTrackerGetReturnsCopy(t *testing.T) {
	tr := NewTracker(8)
	uid := types.UID("u")
	tok := tr.Begin(uid, types.NamespacedName{Name: "a"}, true)
	tr.AddEvent(uid, tok, job.Event{Name: "submit"})
	obs, _ := tr.Get(uid)
	obs.Events[0].Name = "changed"
	again, _ := tr.Get(uid)
	if again.Events[0].Name != "submit" {
		t.Fatal("Get shares its event slice with the tracker")
	}
}

func TestTrackerForgetAndUnsettled(t *testing.T) {
	tr := NewTracker(16)
	a, b, c := types.UID("a"), types.UID("b"), types.UID("c")
	ka, kb, kc := types.NamespacedName{Namespace: "n", Name: "a"}, types.NamespacedName{Namespace: "n", Name: "b"}, types.NamespacedName{Namespace: "n", Name: "c"}
	ta := tr.Begin(a, ka, true)
	tb := tr.Begin(b, kb, true)
	tr.Begin(c, kc, true)
	tr.Finish(a, ta, Outcome{Kind: OutcomeExited})
	tr.Finish(b, tb, Outcome{Kind: OutcomeLost})
	for len(tr.Events()) > 0 {
		<-tr.Events()
	}
	got := tr.PokeUnsettled()
	if fmt.Sprint(got) != fmt.Sprint([]types.NamespacedName{kb, kc}) {
		t.Fatalf("PokeUnsettled() = %v, want [n/b n/c]", got)
	}
	if n := len(tr.Events()); n != 2 {
		t.Fatalf("%d notifications, want 2", n)
	}
	tr.Forget(a)
	tr.ForgetKey(kb)
	if tr.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", tr.Len())
	}
}

func TestTrackerCancelAndUrgencySurviveReattach(t *testing.T) {
	tr := NewTracker(8)
	uid, key := types.UID("u"), types.NamespacedName{Name: "a"}
	tr.Begin(uid, key, true)
	at := tr.MarkCancelRequested(uid, key)
	if again := tr.MarkCancelRequested(uid, key); !again.Equal(at) {
		t.Fatalf("second MarkCancelRequested moved the time: %v != %v", again, at)
	}
	tr.SetUrgencyResult(uid, 31, "Operation not permitted")
	tr.Begin(uid, key, false)
	obs, _ := tr.Get(uid)
	if !obs.CancelRequested.Equal(at) || obs.UrgencyRejected != 31 || obs.UrgencyError == "" {
		t.Fatalf("re-attach lost cancel/urgency state: %+v", obs)
	}
	tr.SetUrgencyResult(uid, 5, "")
	obs, _ = tr.Get(uid)
	if obs.UrgencyRequested != 5 || obs.UrgencyRejected != -1 {
		t.Fatalf("urgency state = %+v", obs)
	}
}

func TestAppendBounded(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		max  int
		want string
	}{
		{"under bound", []string{"submit", "alloc"}, 4, "[submit alloc]"},
		{"drops oldest repeatable", []string{"submit", "urgency", "priority", "start", "urgency"}, 4, "[submit priority start urgency]"},
		{"all protected drops oldest", []string{"submit", "alloc", "start", "finish"}, 3, "[alloc start finish]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var evs []job.Event
			for i, n := range tc.in {
				evs = appendBounded(evs, job.Event{Name: n, Timestamp: float64(i)}, tc.max)
			}
			var names []string
			for _, e := range evs {
				names = append(names, e.Name)
			}
			if got := fmt.Sprint(names); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := NewTracker(1)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		uid := types.UID(fmt.Sprint(i))
		tok := tr.Begin(uid, types.NamespacedName{Name: string(uid)}, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				tr.AddEvent(uid, tok, job.Event{Name: "debug"})
				tr.Get(uid)
			}
			tr.Finish(uid, tok, Outcome{Kind: OutcomeExited})
		}()
	}
	wg.Wait()
	if got := tr.PokeUnsettled(); len(got) != 0 {
		t.Fatalf("unsettled after all finished: %v", got)
	}
}

func TestAppendBoundedOrdersByTimestamp(t *testing.T) {
	var evs []job.Event
	for _, e := range []job.Event{{Name: "start", Timestamp: 3}, {Name: "submit", Timestamp: 1}, {Name: "alloc", Timestamp: 2}, {Name: "finish", Timestamp: 4}, {Name: "release", Timestamp: 4}} {
		evs = appendBounded(evs, e, 10)
	}
	var names []string
	for _, e := range evs {
		names = append(names, e.Name)
	}
	if got := fmt.Sprint(names); got != "[submit alloc start finish release]" {
		t.Fatalf("order %s", got)
	}
}

// TestTrackerBoundsAStream: a broker streaming events to a job (an endless
// eventlog of priority events with padded contexts) leaves the tracker at
// most maxTrackedEvents events for it, repeated ones with clipped contexts
// (their essential members kept), and its lifecycle events.
func TestTrackerBoundsAStream(t *testing.T) {
	tr := NewTracker(16)
	uid := types.UID("u")
	tok := tr.Begin(uid, types.NamespacedName{Namespace: "ns", Name: "n"}, true)
	tr.AddEvent(uid, tok, job.Event{Timestamp: 1, Name: "submit", Context: map[string]any{"userid": float64(1)}})
	tr.AddEvent(uid, tok, job.Event{Timestamp: 2, Name: "start"})
	pad := strings.Repeat("p", 4000)
	for i := range 10000 {
		tr.AddEvent(uid, tok, job.Event{Timestamp: 3 + float64(i), Name: "priority", Context: map[string]any{"priority": float64(i), "pad": pad}})
	}
	v, _ := tr.Get(uid)
	if len(v.Events) > maxTrackedEvents {
		t.Fatalf("%d events tracked, bound %d", len(v.Events), maxTrackedEvents)
	}
	cost, names := 0, map[string]bool{}
	for _, ev := range v.Events {
		names[ev.Name] = true
		cost += job.ContextCost(ev.Context)
	}
	if !names["submit"] || !names["start"] {
		t.Fatalf("lifecycle events lost: %v", names)
	}
	if limit := 4500 + maxTrackedEvents*repeatContextCost; cost > limit {
		t.Fatalf("tracked contexts cost %d bytes, want at most %d", cost, limit)
	}
	if last := v.Events[len(v.Events)-1]; last.Context["priority"] != float64(9999) {
		t.Fatalf("the latest priority event lost its essential member: %v", last.Context)
	}
}
