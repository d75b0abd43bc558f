package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

func TestSettledSet(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	obj := func(uid types.UID, rv string, phase fluxjobv1.FluxJobPhase) *fluxjobv1.FluxJob {
		return &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: uid, ResourceVersion: rv},
			Status: fluxjobv1.FluxJobStatus{Phase: phase}}
	}
	tests := []struct {
		name string
		obj  *fluxjobv1.FluxJob
		now  time.Time
		want bool
	}{
		{"older read of a finished job", obj("a", "10", fluxjobv1.PhaseRunning), t0.Add(time.Second), true},
		{"the finished object itself", obj("a", "11", fluxjobv1.PhaseSucceeded), t0.Add(time.Second), false},
		{"unfinished at the written version", obj("a", "11", fluxjobv1.PhaseRunning), t0.Add(time.Second), false},
		{"a job never finished here", obj("b", "3", fluxjobv1.PhasePending), t0.Add(time.Second), false},
		{"after the TTL", obj("a", "10", fluxjobv1.PhaseRunning), t0.Add(settledTTL + time.Second), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s settledSet
			s.add("a", "11", t0)
			if got := s.stale(tc.obj, tc.now); got != tc.want {
				t.Fatalf("stale = %v, want %v", got, tc.want)
			}
		})
	}
	var s settledSet
	s.add("a", "11", t0)
	s.remove("a")
	if s.stale(obj("a", "10", fluxjobv1.PhaseRunning), t0) {
		t.Fatal("stale after remove")
	}
	s.add("old", "1", t0)
	s.add("new", "2", t0.Add(settledTTL+time.Second))
	if len(s.m) != 1 {
		t.Fatalf("%d entries after the first expired, want 1", len(s.m))
	}
}
