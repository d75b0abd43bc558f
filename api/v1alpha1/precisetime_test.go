package v1alpha1

import (
	"encoding/json"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
)

func TestPreciseTimeJSON(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		out  string
	}{
		{`"2026-11-28T18:00:00Z"`, time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC), `"2026-11-28T18:00:00Z"`},
		{`"2026-11-28T18:00:00.123456789Z"`, time.Date(2026, 11, 28, 18, 0, 0, 123456789, time.UTC), `"2026-11-28T18:00:00.123456789Z"`},
		{`"2026-11-28T18:00:00.1Z"`, time.Date(2026, 11, 28, 18, 0, 0, 100000000, time.UTC), `"2026-11-28T18:00:00.1Z"`},
		{`"2026-11-28T20:00:00.5+02:00"`, time.Date(2026, 11, 28, 18, 0, 0, 500000000, time.UTC), `"2026-11-28T18:00:00.5Z"`},
		{`null`, time.Time{}, `null`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var pt PreciseTime
			if err := json.Unmarshal([]byte(tc.in), &pt); err != nil {
				t.Fatal(err)
			}
			if !pt.Equal(tc.want) {
				t.Fatalf("read %s as %v, want %v", tc.in, pt.Time, tc.want)
			}
			b, err := json.Marshal(pt)
			if err != nil || string(b) != tc.out {
				t.Fatalf("wrote %s (%v), want %s", b, err, tc.out)
			}
		})
	}
	var pt PreciseTime
	for _, bad := range []string{`"yesterday"`, `42`, `"2026-11-28"`} {
		if err := json.Unmarshal([]byte(bad), &pt); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
	// A status written by an earlier controller, whole seconds, reads.
	var st FluxJobStatus
	if err := json.Unmarshal([]byte(`{"submitAttemptTime":"2026-11-28T18:00:00Z"}`), &st); err != nil || st.SubmitAttemptTime == nil {
		t.Fatalf("old status: %v %v", err, st.SubmitAttemptTime)
	}
}

func TestPreciseTimeSemanticEquality(t *testing.T) {
	a := NewPreciseTime(time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC))
	b := NewPreciseTime(a.In(time.FixedZone("x", 3600)))
	c := NewPreciseTime(a.Add(time.Nanosecond))
	if !equality.Semantic.DeepEqual(FluxJobStatus{SubmitAttemptTime: &a}, FluxJobStatus{SubmitAttemptTime: &b}) {
		t.Error("the same instant in two zones is not equal")
	}
	if equality.Semantic.DeepEqual(FluxJobStatus{SubmitAttemptTime: &a}, FluxJobStatus{SubmitAttemptTime: &c}) {
		t.Error("instants a nanosecond apart are equal")
	}
}
