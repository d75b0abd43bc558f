package controllers

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// TestPhaseEventsOnePerLifetime: a FluxJob's phase changes make one event
// for its end (and one if it is suspended), none for Submitted or Running.
func TestPhaseEventsOnePerLifetime(t *testing.T) {
	tests := []struct {
		from, to fluxjobv1.FluxJobPhase
		want     string // "" : no event
	}{
		{"", fluxjobv1.PhasePending, ""},
		{fluxjobv1.PhasePending, fluxjobv1.PhaseSubmitted, ""},
		{fluxjobv1.PhaseSubmitted, fluxjobv1.PhaseRunning, ""},
		{fluxjobv1.PhaseRunning, fluxjobv1.PhaseSucceeded, "Normal Succeeded"},
		{fluxjobv1.PhasePending, fluxjobv1.PhaseSucceeded, "Normal Succeeded"},
		{fluxjobv1.PhaseRunning, fluxjobv1.PhaseFailed, "Warning " + fluxjobv1.ReasonNonZeroExit},
		{fluxjobv1.PhaseRunning, fluxjobv1.PhaseCancelled, "Warning Cancelled"},
		{fluxjobv1.PhasePending, fluxjobv1.PhaseSuspended, "Normal Suspended"},
	}
	for _, tc := range tests {
		t.Run(string(tc.from)+"->"+string(tc.to), func(t *testing.T) {
			rec := events.NewFakeRecorder(4)
			w := &writer{recorder: rec}
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "ns"}, Status: fluxjobv1.FluxJobStatus{Phase: tc.to}}
			if tc.to == fluxjobv1.PhaseFailed {
				obj.Status.Conditions = []metav1.Condition{{Type: fluxjobv1.ConditionFailed, Status: metav1.ConditionTrue, Reason: fluxjobv1.ReasonNonZeroExit}}
			}
			w.phaseEvent(context.Background(), obj, tc.from)
			close(rec.Events)
			var got []string
			for e := range rec.Events {
				got = append(got, e)
			}
			switch {
			case tc.want == "" && len(got) != 0:
				t.Fatalf("events %q, want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want)):
				t.Fatalf("events %q, want one %q", got, tc.want)
			}
		})
	}
}
