package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
)

// TestArraySampleCost: why an array's 500 held indexes wait costs one
// job-info.lookup (of its first waiting index) per arrayStatusPace,
// however often it is reconciled; when that index stops waiting, the
// status is not written naming it: the write waits (at most WaitingPace)
// for the read of the next one.
func TestArraySampleCost(t *testing.T) {
	obj := fakeJob("sweep", "true")
	obj.Spec.Urgency = ptrTo(int32(0))
	obj.Spec.Array = &fluxjobv1.ArraySpec{Indexes: "0-499"}
	w := newFakeWorld(t, Options{}, obj)
	var mu sync.Mutex
	now := time.Now()
	w.r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	key := types.NamespacedName{Namespace: "ns", Name: "sweep"}
	reconcile := func() *fluxjobv1.FluxJob {
		t.Helper()
		if _, err := w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		var o fluxjobv1.FluxJob
		if err := w.c.Get(context.Background(), key, &o); err != nil {
			t.Fatal(err)
		}
		return &o
	}
	lookups := func() int { return w.broker.RequestCount("job-info.lookup") }

	w.drive("sweep", func(o *fluxjobv1.FluxJob, err error) bool {
		advance(arrayStatusPace) // the status pace lets each write through
		return err == nil && o.Status.Pending != nil && o.Status.Pending.Reason == fluxjobv1.PendingHeld &&
			strings.Contains(o.Status.Pending.Message, "500 of 500 indexes wait in Flux; the first, index 0 (job ")
	})
	advance(arrayStatusPace)
	rv := reconcile().ResourceVersion
	l0 := lookups()
	for range 50 {
		reconcile()
	}
	if n := lookups() - l0; n != 0 {
		t.Errorf("%d job-info.lookup in 50 reconciles within the pace, want 0", n)
	}
	for i := range 2 {
		advance(arrayStatusPace)
		for range 50 {
			reconcile()
		}
		if n := lookups() - l0; n != i+1 {
			t.Errorf("%d job-info.lookup in 50 reconciles over %d paces, want %d", n, i+1, i+1)
		}
	}
	if o := reconcile(); o.ResourceVersion != rv {
		t.Errorf("the status of a waiting array was written again with nothing changed: %+v", o.Status)
	}

	// Index 0 ends (cancelled in Flux): 499 wait, the first is index 1.
	run, ok := w.r.arrays.Get(obj.UID)
	if !ok {
		t.Fatal("no run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, w.broker.URI())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := job.Cancel(ctx, c, run.ID(0), ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "index 0 failed", func() bool {
		return run.Counts().Failed == 1 && len(run.In(array.Active, 1)) == 1 && run.In(array.Active, 1)[0] == 1
	})
	advance(time.Second / 2) // the status may be written, the sample not read yet
	o := reconcile()
	if p := o.Status.Pending; p == nil || strings.Contains(p.Message, "499 of 500 indexes wait in Flux; the first, index 0 ") {
		t.Errorf("written with the index that no longer waits: %+v", p)
	}
	advance(time.Second / 2)
	o = reconcile()
	if p := o.Status.Pending; p == nil || !strings.Contains(p.Message, "499 of 500 indexes wait in Flux; the first, index 1 (job "+run.ID(1).F58()+")") {
		t.Errorf("after the next read: pending %+v", p)
	}
}
