package array

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
)

func TestRunStates(t *testing.T) {
	set, _ := idset.Parse("0-9", 0)
	r := New("u", types.NamespacedName{}, set, 4)
	if c := r.Counts(); c.Uncertain != 4 || c.Unsubmitted != 6 || c.InFlight() != 4 {
		t.Fatalf("new run: %+v", c)
	}
	// Below the mark only; Uncertain ones are not taken.
	if got := r.Take(10, 6); len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Fatalf("Take = %v", got)
	}
	r.Known(0, Succeeded)
	r.Known(4, Failed) // not Uncertain: ignored
	r.SetID(4, 44)
	r.Move(4, Running, Active)
	r.Move(4, Succeeded)
	if r.Move(4, Failed) {
		t.Error("a final index moved")
	}
	r.Move(1, Unsubmitted, Uncertain)
	if p := r.NextUnsubmitted(); p != 1 {
		t.Errorf("NextUnsubmitted = %d, want 1 (looked up and missing)", p)
	}
	r.Lost(5) // no ID: looked up again
	if got := r.In(Uncertain, 10); len(got) != 3 || got[2] != 5 {
		t.Errorf("Uncertain = %v", got)
	}
	st := r.Status()
	if st.Succeeded != 2 || st.SucceededIndexes != "0,4" || st.Pending != 5 {
		t.Errorf("status = %+v", st)
	}
	r.SetID(2, 22)
	r.EndEarly()
	if got := r.ToCancel(10); len(got) != 1 || got[0] != 2 || r.ID(2) != job.ID(22) {
		t.Errorf("ToCancel = %v", got)
	}
	if c := r.Counts(); c.Cancelled != 5 || r.Take(10, 10) != nil {
		t.Errorf("after EndEarly: %+v", c)
	}
}

func TestPolicy(t *testing.T) {
	set, _ := idset.Parse("0-9", 0)
	two := int32(2)
	for _, tc := range []struct {
		name string
		rule fluxjobv1.ArraySuccessRule
		ok   []int
		met  bool
	}{
		{"indexes all", fluxjobv1.ArraySuccessRule{SucceededIndexes: "0,5"}, []int{0, 5}, true},
		{"indexes missing one", fluxjobv1.ArraySuccessRule{SucceededIndexes: "0,5"}, []int{0}, false},
		{"indexes outside the array ignored", fluxjobv1.ArraySuccessRule{SucceededIndexes: "9-20"}, []int{9}, true},
		{"count", fluxjobv1.ArraySuccessRule{SucceededCount: &two}, []int{3, 7}, true},
		{"count short", fluxjobv1.ArraySuccessRule{SucceededCount: &two}, []int{3}, false},
		{"count of indexes", fluxjobv1.ArraySuccessRule{SucceededIndexes: "0-4", SucceededCount: &two}, []int{3, 7}, false},
		{"count of indexes met", fluxjobv1.ArraySuccessRule{SucceededIndexes: "0-4", SucceededCount: &two}, []int{3, 4}, true},
	} {
		p, err := ParsePolicy(&fluxjobv1.ArraySuccessPolicy{Rules: []fluxjobv1.ArraySuccessRule{tc.rule}}, set)
		if err != nil {
			t.Fatal(err)
		}
		b := idset.NewBits(set.Len())
		for _, i := range tc.ok {
			b.Set(i)
		}
		if got := p.Met(b, len(tc.ok)); got != tc.met {
			t.Errorf("%s: Met = %v, want %v", tc.name, got, tc.met)
		}
	}
	if _, err := ParsePolicy(&fluxjobv1.ArraySuccessPolicy{Rules: []fluxjobv1.ArraySuccessRule{{SucceededIndexes: "x"}}}, set); err == nil {
		t.Error("a bad idset was accepted")
	}
}
