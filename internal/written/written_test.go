package written

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

func TestWrittenSet(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	obj := func(uid types.UID, rv string, phase fluxjobv1.FluxJobPhase) *fluxjobv1.FluxJob {
		return &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: uid, ResourceVersion: rv},
			Status: fluxjobv1.FluxJobStatus{Phase: phase}}
	}
	// Two writes in a row: 10 -> 11 (the marker), 11 -> 12 (the final status).
	setup := func() *Set {
		var s Set
		s.Add("10", obj("a", "11", fluxjobv1.PhasePending), t0)
		s.Add("11", obj("a", "12", fluxjobv1.PhaseSucceeded), t0.Add(time.Millisecond))
		return &s
	}
	tests := []struct {
		name   string
		read   *fluxjobv1.FluxJob
		now    time.Time
		wantRV string // "" : the read itself
	}{
		{"read from before both writes", obj("a", "10", fluxjobv1.PhasePending), t0.Add(time.Second), "12"},
		{"read from between the writes", obj("a", "11", fluxjobv1.PhasePending), t0.Add(time.Second), "12"},
		{"the cache caught up", obj("a", "12", fluxjobv1.PhaseSucceeded), t0.Add(time.Second), ""},
		{"someone else wrote after us", obj("a", "13", fluxjobv1.PhaseSucceeded), t0.Add(time.Second), ""},
		{"an object never written here", obj("b", "10", fluxjobv1.PhasePending), t0.Add(time.Second), ""},
		{"after the TTL", obj("a", "10", fluxjobv1.PhasePending), t0.Add(TTL + time.Second), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := setup()
			got := s.Latest(tc.read, tc.now)
			switch {
			case tc.wantRV == "" && got != tc.read:
				t.Fatalf("latest = rv %s, want the read itself (rv %s)", got.ResourceVersion, tc.read.ResourceVersion)
			case tc.wantRV != "" && (got == tc.read || got.ResourceVersion != tc.wantRV):
				t.Fatalf("latest = rv %s, want our write at rv %s", got.ResourceVersion, tc.wantRV)
			case tc.wantRV != "" && got.Status.Phase != fluxjobv1.PhaseSucceeded:
				t.Fatalf("latest phase %s, want the written Succeeded", got.Status.Phase)
			}
		})
	}

	t.Run("a copy, not the stored object", func(t *testing.T) {
		s := setup()
		got := s.Latest(obj("a", "10", ""), t0)
		got.Status.Phase = fluxjobv1.PhaseFailed
		if again := s.Latest(obj("a", "10", ""), t0); again.Status.Phase != fluxjobv1.PhaseSucceeded {
			t.Fatalf("the stored object was changed through a returned copy: %s", again.Status.Phase)
		}
	})
	t.Run("caught up forgets the copy, keeps the time", func(t *testing.T) {
		s := setup()
		s.Latest(obj("a", "12", fluxjobv1.PhaseSucceeded), t0.Add(time.Second))
		stale := obj("a", "10", fluxjobv1.PhasePending)
		if got := s.Latest(stale, t0.Add(time.Second)); got != stale {
			t.Fatal("a copy is still used after the cache showed the write")
		}
		if ago, ok := s.Since("a", t0.Add(time.Second)); !ok || ago != time.Second-time.Millisecond {
			t.Fatalf("since = %v, %v; want 999ms, true", ago, ok)
		}
	})
	t.Run("the cache's own event drops the copy", func(t *testing.T) {
		s := setup()
		s.Seen(obj("a", "11", fluxjobv1.PhasePending)) // an older event: kept
		if got := s.Latest(obj("a", "10", fluxjobv1.PhasePending), t0); got.ResourceVersion != "12" {
			t.Fatalf("an event older than the write dropped the copy (latest rv %s)", got.ResourceVersion)
		}
		s.Seen(obj("a", "12", fluxjobv1.PhaseSucceeded))
		if s.m["a"].obj != nil {
			t.Fatal("the copy is kept after the cache showed the write")
		}
		if _, ok := s.Since("a", t0); !ok {
			t.Fatal("the time of the write is gone with the copy")
		}
	})
	t.Run("a write the cache showed before its response keeps no copy", func(t *testing.T) {
		var s Set
		s.Seen(obj("a", "11", fluxjobv1.PhasePending)) // not in flight: not remembered
		s.Begin("a")
		s.Seen(obj("a", "11", fluxjobv1.PhasePending))
		s.Add("10", obj("a", "11", fluxjobv1.PhasePending), t0)
		if s.m["a"].obj != nil {
			t.Fatal("a copy is kept of a write the cache already shows")
		}
		if _, ok := s.Since("a", t0); !ok {
			t.Fatal("the time of the write is not kept")
		}
		if len(s.inflight) != 0 {
			t.Fatalf("in-flight writes left after add: %v", s.inflight)
		}
		s.Begin("b")
		s.End("b")
		s.Seen(obj("b", "5", fluxjobv1.PhasePending))
		if len(s.inflight) != 0 {
			t.Fatalf("a failed write stays in flight: %v", s.inflight)
		}
	})
	t.Run("a write on someone else's version starts a new chain", func(t *testing.T) {
		s := setup()
		s.Add("20", obj("a", "21", fluxjobv1.PhaseSucceeded), t0.Add(time.Second))
		stale := obj("a", "11", fluxjobv1.PhasePending)
		if got := s.Latest(stale, t0.Add(time.Second)); got != stale {
			t.Fatalf("rv 11 is not replaced by the write 20 -> 21, got rv %s", got.ResourceVersion)
		}
	})
	t.Run("remove and sweep", func(t *testing.T) {
		s := setup()
		s.Remove("a")
		if _, ok := s.Since("a", t0); ok {
			t.Fatal("since after remove")
		}
		s.Add("1", obj("old", "2", ""), t0)
		s.Add("1", obj("new", "2", ""), t0.Add(TTL+time.Second))
		if len(s.m) != 1 {
			t.Fatalf("%d entries after the first expired, want 1", len(s.m))
		}
		// A copy-less entry goes once statusPace is over.
		s.Seen(obj("new", "2", ""))
		s.Add("1", obj("newer", "2", ""), t0.Add(TTL+sweepEvery+2*time.Second))
		if _, ok := s.m["new"]; ok || len(s.m) != 1 {
			t.Fatalf("entries %v: the copy-less one past statusPace should be gone", s.m)
		}
	})
	t.Run("the chain is bounded", func(t *testing.T) {
		var s Set
		for i := range 3 * maxReplaced {
			s.Add(string(rune('A'+i)), obj("a", string(rune('A'+i+1)), ""), t0)
		}
		if n := len(s.m["a"].replaced); n != maxReplaced {
			t.Fatalf("%d replaced versions kept, want %d", n, maxReplaced)
		}
	})
}
