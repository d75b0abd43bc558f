package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/written"
)

func TestPaceStatus(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	wrote := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u", ResourceVersion: "2", Generation: 1}}
	running := &broker.View{HasJobID: true, JobID: 1234, Events: []job.Event{
		{Name: "submit", Timestamp: 1}, {Name: "alloc", Timestamp: 2}, {Name: "start", Timestamp: 3}}}
	finished := &broker.View{HasJobID: true, JobID: 1234, Events: []job.Event{
		{Name: "submit", Timestamp: 1}, {Name: "start", Timestamp: 3}, {Name: "finish", Timestamp: 4, Context: map[string]any{"status": float64(0)}},
		{Name: "clean", Timestamp: 5}}, Outcome: broker.Outcome{Kind: broker.OutcomeExited}}
	tests := []struct {
		name    string
		wrote   bool
		elapsed time.Duration
		in      statusInput
		want    time.Duration
	}{
		{"never written here: at once", false, 0, statusInput{Obs: running}, 0},
		{"job ID right after the marker: waits", true, 100 * time.Millisecond, statusInput{Obs: running}, 900 * time.Millisecond},
		{"the end right after the marker: at once", true, 100 * time.Millisecond, statusInput{Obs: finished}, 0},
		{"a failure the controller decided: at once", true, 0, statusInput{Failure: &failure{Reason: "X", Message: "y"}}, 0},
		{"after the period: at once", true, statusPace, statusInput{Obs: running}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(tc.elapsed)
			w := &writer{written: &written.Set{}, now: func() time.Time { return now }}
			if tc.wrote {
				w.written.Add("1", wrote, t0)
			}
			obj := wrote.DeepCopy()
			if got := w.pace(obj, computeStatus(obj, tc.in, now)); got != tc.want {
				t.Fatalf("paceStatus = %v, want %v", got, tc.want)
			}
		})
	}
}
