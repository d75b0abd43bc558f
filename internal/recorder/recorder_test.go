package recorder

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// startRecorder runs rec until the test ends.
func startRecorder(t *testing.T, rec *Recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the recorder did not stop within 10s")
		}
	})
}

// waitEvents waits until c holds n events in ns.
func waitEvents(t *testing.T, c client.Client, ns string, n int) []eventsv1.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list eventsv1.EventList
		if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) >= n || time.Now().After(deadline) {
			if len(list.Items) != n {
				t.Fatalf("%d events written, want %d: %+v", len(list.Items), n, list.Items)
			}
			return list.Items
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventRecorderWrites(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).Build()
	rec := New(c, testScheme(), Options{Controller: "fluxjob-controller", Instance: "fluxjob-controller-pod"})
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "u"}}
	// Recorded before the recorder starts: waits in the queue.
	rec.Eventf(obj, nil, corev1.EventTypeWarning, "NonZeroExit", "Reconcile", "Flux job %s exited with code %d", "ƒ1", 3)
	startRecorder(t, rec)
	rec.Eventf(obj, nil, corev1.EventTypeNormal, "Succeeded", "Reconcile", "%s", "done")
	evs := waitEvents(t, c, "ns", 2)
	byReason := map[string]eventsv1.Event{}
	for _, e := range evs {
		byReason[e.Reason] = e
	}
	e := byReason["NonZeroExit"]
	if e.Type != corev1.EventTypeWarning || e.Action != "Reconcile" || e.Note != "Flux job ƒ1 exited with code 3" ||
		e.ReportingController != "fluxjob-controller" || e.ReportingInstance != "fluxjob-controller-pod" || e.EventTime.IsZero() {
		t.Errorf("event %+v", e)
	}
	want := corev1.ObjectReference{APIVersion: fluxjobv1.GroupVersion.String(), Kind: "FluxJob", Namespace: "ns", Name: "a", UID: "u"}
	if e.Regarding != want {
		t.Errorf("regarding %+v, want %+v", e.Regarding, want)
	}
	if byReason["Succeeded"].Note != "done" {
		t.Errorf("event %+v", byReason["Succeeded"])
	}
	if rec.Dropped() != 0 {
		t.Errorf("%d events dropped", rec.Dropped())
	}
}

func TestEventRecorderDrops(t *testing.T) {
	obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "u"}}
	var creates atomic.Int32
	failing := func(err error) client.Client {
		return fake.NewClientBuilder().WithScheme(testScheme()).WithInterceptorFuncs(interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				creates.Add(1)
				return err
			},
		}).Build()
	}
	gr := schema.GroupResource{Group: "events.k8s.io", Resource: "events"}
	tests := []struct {
		name    string
		err     error
		queue   int
		emit    int
		creates int32 // create calls expected
		dropped uint64
	}{
		{name: "queue full", err: nil, queue: 1, emit: 3, creates: 0, dropped: 2},
		{name: "refused: not retried", err: apierrors.NewForbidden(gr, "x", errors.New("no")), queue: 8, emit: 1, creates: 1, dropped: 1},
		{name: "unreachable: retried", err: errors.New("connection refused"), queue: 8, emit: 1, creates: 2, dropped: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			creates.Store(0)
			rec := New(failing(tc.err), testScheme(), Options{Controller: "c", QueueSize: tc.queue, Attempts: 2})
			for range tc.emit {
				rec.Eventf(obj, nil, corev1.EventTypeNormal, "R", "A", "n")
			}
			if tc.creates > 0 {
				startRecorder(t, rec)
			}
			deadline := time.Now().Add(10 * time.Second)
			for rec.Dropped() < tc.dropped && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := rec.Dropped(); got != tc.dropped {
				t.Fatalf("dropped %d, want %d", got, tc.dropped)
			}
			if got := creates.Load(); got != tc.creates {
				t.Fatalf("%d creates, want %d", got, tc.creates)
			}
		})
	}
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := fluxjobv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
