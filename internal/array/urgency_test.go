package array

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
)

// TestUnstarted: a pass visits the Active indexes, counts the Running
// ones, skips the unsubmitted and final ones, and stops at an index whose
// job ID is not known yet.
func TestUnstarted(t *testing.T) {
	set, _ := idset.Parse("0-7", 0)
	r := New("u", types.NamespacedName{}, set, 0)
	if r.Inherited() || r.Urgency().Applied != -1 {
		t.Fatalf("new run: inherited %v, urgency %+v", r.Inherited(), r.Urgency())
	}
	r.Take(6, 8) // 0-5 Submitting; 6, 7 Unsubmitted
	for p := range 5 {
		r.SetID(p, job.ID(100+p))
	}
	r.Move(1, Running, Active)
	r.Move(2, Succeeded)
	tests := []struct {
		from, max int
		ids       []job.ID
		started   int
		next      int
		blocked   bool
	}{
		{0, 10, []job.ID{100, 103, 104}, 1, 5, true}, // 5 is Submitting
		{0, 2, []job.ID{100, 103}, 1, 4, false},
		{4, 10, []job.ID{104}, 0, 5, true},
	}
	for _, tc := range tests {
		ids, started, next, blocked := r.Unstarted(tc.from, tc.max)
		if !slices.Equal(ids, tc.ids) || started != tc.started || next != tc.next || blocked != tc.blocked {
			t.Errorf("Unstarted(%d, %d) = %v, %d, %d, %v; want %v, %d, %d, %v", tc.from, tc.max, ids, started, next, blocked, tc.ids, tc.started, tc.next, tc.blocked)
		}
	}
	r.SetID(5, 105)
	if ids, _, next, blocked := r.Unstarted(5, 10); !slices.Equal(ids, []job.ID{105}) || next != 8 || blocked {
		t.Errorf("after 5's ID: %v, next %d, blocked %v", ids, next, blocked)
	}
	if New("u", types.NamespacedName{}, set, 3).Inherited() != true {
		t.Error("a run below a mark is not inherited")
	}
}
