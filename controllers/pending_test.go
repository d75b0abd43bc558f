package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
)

func TestPendingStatusSince(t *testing.T) {
	now := time.Unix(5000, 0)
	fr := pending.Reason{Reason: fluxjobv1.PendingScheduling, Message: "m", Since: 103}
	p := pendingStatus(nil, fluxjobv1.PhaseSubmitted, nil, nil, fr, true, now)
	if p == nil || p.Since == nil || p.Since.Unix() != 103 {
		t.Fatalf("pending %+v, want since 103 (the priority event)", p)
	}
	// A reason without an event of its own starts now, and keeps that
	// time while it lasts (recomputing changes nothing).
	qs := pending.Reason{Reason: fluxjobv1.PendingQueueStopped, Message: "q"}
	p2 := pendingStatus(p, fluxjobv1.PhaseSubmitted, nil, nil, qs, true, now)
	if p2.Since.Unix() != 5000 {
		t.Fatalf("since %v, want now", p2.Since)
	}
	p3 := pendingStatus(p2, fluxjobv1.PhaseSubmitted, nil, nil, qs, true, now.Add(time.Hour))
	if *p3 != *p2 {
		t.Fatalf("recomputed %+v, want %+v", p3, p2)
	}
	if p := pendingStatus(p2, fluxjobv1.PhaseRunning, nil, nil, fr, true, now); p != nil {
		t.Fatalf("running: pending %+v, want none", p)
	}
	if p := pendingStatus(nil, fluxjobv1.PhasePending, &hold{Reason: fluxjobv1.ReasonSuspended, Message: "s"}, &admission{OK: true}, pending.Reason{}, false, now); p == nil || p.Reason != fluxjobv1.PendingSuspended {
		t.Fatalf("suspended before submission: %+v", p)
	}
	if p := pendingStatus(nil, fluxjobv1.PhasePending, &hold{Reason: fluxjobv1.ReasonWaitingForDependency, Message: "d"}, nil, pending.Reason{}, false, now); p == nil || p.Reason != fluxjobv1.PendingWaitingForDependency {
		t.Fatalf("waiting for a dependency FluxJob: %+v", p)
	}
	if p := pendingStatus(nil, fluxjobv1.PhasePending, nil, &admission{Reason: "InstanceNotFound", Message: "no"}, pending.Reason{}, false, now); p == nil || p.Reason != fluxjobv1.PendingNotAdmitted {
		t.Fatalf("not admitted: %+v", p)
	}
	if p := pendingStatus(nil, fluxjobv1.PhasePending, nil, &admission{OK: true}, pending.Reason{}, false, now); p != nil {
		t.Fatalf("being submitted: %+v, want none", p)
	}
	est := pending.Reason{Reason: fluxjobv1.PendingResources, Since: 103, Estimate: 1796575259.387324}
	if p := pendingStatus(nil, fluxjobv1.PhaseSubmitted, nil, nil, est, true, now); p.EstimatedStartTime == nil || !p.EstimatedStartTime.Equal(&metav1.Time{Time: time.Unix(1796575259, 0)}) {
		t.Fatalf("Estimate: %+v", p)
	}
}
