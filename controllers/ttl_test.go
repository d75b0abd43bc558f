package controllers

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestExpireFinished decides, with a fixed clock, whether a finished
// FluxJob is deleted now or requeued at its deadline.
func TestExpireFinished(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	done := metav1.NewTime(now.Add(-10 * time.Second))
	tests := []struct {
		name    string
		ttl     *int32
		phase   fluxjobv1.FluxJobPhase
		done    *metav1.Time
		cond    *metav1.Condition // instead of completionTime
		deleted bool
		requeue time.Duration
	}{
		{"no ttl", nil, fluxjobv1.PhaseSucceeded, &done, nil, false, 0},
		{"expired", ptrTo(int32(5)), fluxjobv1.PhaseSucceeded, &done, nil, true, 0},
		{"zero", ptrTo(int32(0)), fluxjobv1.PhaseFailed, &done, nil, true, 0},
		{"not yet", ptrTo(int32(60)), fluxjobv1.PhaseSucceeded, &done, nil, false, 50 * time.Second},
		{"not finished", ptrTo(int32(0)), fluxjobv1.PhaseRunning, nil, nil, false, 0},
		{"failed before submission", ptrTo(int32(30)), fluxjobv1.PhaseFailed, nil,
			&metav1.Condition{Type: fluxjobv1.ConditionFinished, Status: metav1.ConditionTrue, Reason: "InvalidJobspec",
				LastTransitionTime: metav1.NewTime(now.Add(-20 * time.Second))}, false, 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "j", UID: "u1"},
				Spec:   fluxjobv1.FluxJobSpec{Command: []string{"true"}, TTLSecondsAfterFinished: tc.ttl},
				Status: fluxjobv1.FluxJobStatus{Phase: tc.phase, CompletionTime: tc.done}}
			if tc.cond != nil {
				obj.Status.Conditions = []metav1.Condition{*tc.cond}
			}
			c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(obj).Build()
			r := &FluxJobReconciler{Client: c, now: func() time.Time { return now }}
			var cur fluxjobv1.FluxJob
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &cur); err != nil {
				t.Fatal(err)
			}
			r.once.Do(r.init)
			res, err := expire(context.Background(), r.w, &cur)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Get(context.Background(), client.ObjectKeyFromObject(obj), &cur)
			if gone := apierrors.IsNotFound(err); gone != tc.deleted {
				t.Fatalf("deleted %v, want %v (get: %v)", gone, tc.deleted, err)
			}
			if res.RequeueAfter != tc.requeue {
				t.Fatalf("requeue after %s, want %s", res.RequeueAfter, tc.requeue)
			}
		})
	}
}

// TestEnvtestTTLAfterFinished: a finished FluxJob with
// ttlSecondsAfterFinished is deleted by the controller (through its
// finalizer), whether it succeeded or failed; one without stays.
func TestEnvtestTTLAfterFinished(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("keep", cmdSpec("true"))
	h.create("ok", fluxjobv1.FluxJobSpec{Command: []string{"true"}, TTLSecondsAfterFinished: ptrTo(int32(1))})
	h.create("bad", fluxjobv1.FluxJobSpec{Command: []string{"false"}, TTLSecondsAfterFinished: ptrTo(int32(0))})
	h.waitPhase("keep", fluxjobv1.PhaseSucceeded, 30*time.Second)
	h.waitGone("ok", 30*time.Second)
	h.waitGone("bad", 30*time.Second)
	h.waitEvent("ok", "Expired", 10*time.Second)
	if n := len(h.broker.Jobs()); n != 3 {
		t.Fatalf("broker has %d jobs, want 3", n)
	}
	if _, err := h.get("keep"); err != nil {
		t.Fatalf("FluxJob without a TTL: %v", err)
	}
}
