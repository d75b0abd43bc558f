package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// These tests drive Reconcile directly with controller-runtime's fake
// client (no API server) and the real executor against the test broker.
// They check the reconcile logic quickly; the envtest tests check the same
// paths against a real API server.

type fakeWorld struct {
	t      *testing.T
	c      client.Client
	r      *FluxJobReconciler
	broker *testbroker.Server
	rec    *events.FakeRecorder
}

func newFakeWorld(t *testing.T, opts Options, objs ...client.Object) *fakeWorld {
	t.Helper()
	b := testbroker.New(testbroker.Options{})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	conn := broker.NewConnector(broker.ConnectorOptions{
		URI: b.URI(), Workers: 1,
		Backoff:       wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 1 << 20, Cap: 100 * time.Millisecond},
		CheckInterval: 10 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = conn.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, "connected", func() bool { return conn.Ready(nil) == nil })

	c := fake.NewClientBuilder().WithScheme(testScheme()).WithStatusSubresource(&fluxjobv1.FluxJob{}).WithObjects(objs...).Build()
	rec := events.NewFakeRecorder(100)
	opts.defaults()
	r := &FluxJobReconciler{Client: c, Scheme: c.Scheme(), Recorder: rec, Flux: conn, Tracker: broker.NewTracker(1024), Options: opts, now: time.Now}
	return &fakeWorld{t: t, c: c, r: r, broker: b, rec: rec}
}

// drive reconciles name until cond holds.
func (w *fakeWorld) drive(name string, cond func(*fluxjobv1.FluxJob, error) bool) *fluxjobv1.FluxJob {
	w.t.Helper()
	key := types.NamespacedName{Namespace: "ns", Name: name}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			w.t.Logf("reconcile: %v", err)
		}
		var obj fluxjobv1.FluxJob
		err := w.c.Get(context.Background(), key, &obj)
		if cond(&obj, err) {
			return &obj
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out: phase %q message %q conditions %s", obj.Status.Phase, obj.Status.Message, conditionSummary(&obj))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fakeJob(name string, cmd ...string) *fluxjobv1.FluxJob {
	return &fluxjobv1.FluxJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec:       fluxjobv1.FluxJobSpec{Command: cmd, Urgency: ptrTo(int32(16))},
	}
}

func phaseIs(p fluxjobv1.FluxJobPhase) func(*fluxjobv1.FluxJob, error) bool {
	return func(o *fluxjobv1.FluxJob, err error) bool { return err == nil && o.Status.Phase == p }
}

func TestReconcileLifecycleFakeClient(t *testing.T) {
	w := newFakeWorld(t, Options{}, fakeJob("ok", "true"), fakeJob("bad", "false"))
	ok := w.drive("ok", phaseIs(fluxjobv1.PhaseSucceeded))
	if ok.Status.ExitStatus == nil || *ok.Status.ExitStatus != 0 || !hasFinalizer(ok) || ok.Status.SubmitAttemptTime == nil {
		t.Fatalf("status %+v finalizers %v", ok.Status, ok.Finalizers)
	}
	bad := w.drive("bad", phaseIs(fluxjobv1.PhaseFailed))
	if *bad.Status.ExitStatus != 1 {
		t.Fatalf("exit %d", *bad.Status.ExitStatus)
	}
	if n := len(w.broker.Jobs()); n != 2 {
		t.Fatalf("%d broker jobs, want 2", n)
	}
	// Reconciling a finished job again submits nothing.
	w.drive("ok", phaseIs(fluxjobv1.PhaseSucceeded))
	if n := len(w.broker.Jobs()); n != 2 {
		t.Fatalf("%d broker jobs after more reconciles, want 2", n)
	}
	if w.r.Tracker.Len() != 0 {
		t.Fatalf("tracker still holds %d finished jobs", w.r.Tracker.Len())
	}
	var sawFailed bool
	for len(w.rec.Events) > 0 {
		if e := <-w.rec.Events; strings.Contains(e, "Warning NonZeroExit") {
			sawFailed = true
		}
	}
	if !sawFailed {
		t.Fatal("no Warning NonZeroExit event")
	}
}

func TestReconcileDeleteCancelsFakeClient(t *testing.T) {
	w := newFakeWorld(t, Options{}, fakeJob("long", "sleep", "300"))
	obj := w.drive("long", phaseIs(fluxjobv1.PhaseRunning))
	if err := w.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	w.drive("long", func(_ *fluxjobv1.FluxJob, err error) bool { return err != nil })
	log, _ := w.broker.Eventlog(w.broker.Jobs()[0])
	if !strings.Contains(log, `"type":"cancel"`) {
		t.Fatalf("job not cancelled at the broker:\n%s", log)
	}
}

func TestReconcileNamespaceNotAllowedFakeClient(t *testing.T) {
	w := newFakeWorld(t, Options{AllowedNamespaces: []string{"other"}}, fakeJob("no", "true"))
	obj := w.drive("no", phaseIs(fluxjobv1.PhaseFailed))
	if hasFinalizer(obj) || len(w.broker.Jobs()) != 0 {
		t.Fatalf("finalizers %v, broker jobs %v", obj.Finalizers, w.broker.Jobs())
	}
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonNamespaceNotAllowed)
}

func TestReconcileAdoptsEarlierSubmissionFakeClient(t *testing.T) {
	obj := fakeJob("crash", "true")
	at := fluxjobv1.NewPreciseTime(time.Now())
	obj.Status.SubmitAttemptTime = &at
	w := newFakeWorld(t, Options{}, obj)
	spec, fail := jobspec.Build(obj)
	if fail != nil {
		t.Fatal(fail.Message)
	}
	id := submitDirect(t, w.broker.URI(), spec)
	done := w.drive("crash", phaseIs(fluxjobv1.PhaseSucceeded))
	if done.Status.JobID != int64(id) || len(w.broker.Jobs()) != 1 {
		t.Fatalf("status job %d, broker jobs %v; want only the adopted %d", done.Status.JobID, w.broker.Jobs(), id)
	}
}

func TestReconcileWaitsForJobListBeforeResubmitFakeClient(t *testing.T) {
	obj := fakeJob("recent", "true")
	at := fluxjobv1.NewPreciseTime(time.Now())
	obj.Status.SubmitAttemptTime = &at
	w := newFakeWorld(t, Options{AdoptWindow: time.Hour}, obj)
	res, err := w.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "recent"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter <= 0 || len(w.broker.Jobs()) != 0 {
		t.Fatalf("result %+v, broker jobs %v: want a requeue and no submission inside the adopt window", res, w.broker.Jobs())
	}
}

func TestReconcileUrgencyFakeClient(t *testing.T) {
	w := newFakeWorld(t, Options{}, fakeJob("u", "true"))
	w.broker.PauseScheduling(true)
	obj := w.drive("u", func(o *fluxjobv1.FluxJob, err error) bool {
		return err == nil && o.Status.Urgency != nil && *o.Status.Urgency == 16
	})
	obj.Spec.Urgency = ptrTo(int32(4))
	obj.Generation = 2
	if err := w.c.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	w.drive("u", func(o *fluxjobv1.FluxJob, err error) bool {
		return err == nil && o.Status.Urgency != nil && *o.Status.Urgency == 4
	})
	w.broker.PauseScheduling(false)
	w.drive("u", phaseIs(fluxjobv1.PhaseSucceeded))
}
