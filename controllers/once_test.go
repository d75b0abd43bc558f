package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// Tests of instance identity (identity.go), the O(1) and bounded
// submission paths (submit.go), and the test broker's flux-core restart,
// lag and purge semantics as the controller sees them.

// brokerClient connects a plain client to the test broker (another user
// of the Flux instance, or a controller that then crashed).
func brokerClient(t *testing.T, h *harness) (*flux.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	conn := dialBroker(ctx, t, h.broker.URI())
	t.Cleanup(func() { _ = conn.Close() })
	return conn, ctx
}

// TestEnvtestFreshInstanceReusesJobID: the Flux instance is replaced by a
// fresh one whose job-ID generator starts over, and another user's jobs
// get the very IDs in two FluxJobs' status (the broker's clock is frozen,
// so the IDs collide exactly). Neither FluxJob may ever show the other
// jobs' data; the one deleted meanwhile must not cancel the job now at its
// ID; the other ends InstanceReplaced. A third FluxJob, whose ID the new
// instance has not handed out, ends InstanceReplaced too (its recorded
// instance identity differs from the new one's).
func TestEnvtestFreshInstanceReusesJobID(t *testing.T) {
	frozen := time.Now()
	h := newHarness(t, testbroker.Options{Now: func() time.Time { return frozen }}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.broker.PauseScheduling(true) // the jobs stay pending: nothing ends on its own
	h.start()
	names := []string{"j0", "j1", "j2"}
	for _, n := range names {
		h.create(n, cmdSpec("true"))
	}
	h.waitAll(names, 30*time.Second, "Submitted with an instance ID", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Phase == fluxjobv1.PhaseSubmitted && o.Status.InstanceID != ""
	})
	h.stop()
	before := map[job.ID]*fluxjobv1.FluxJob{}
	for _, n := range names {
		o, err := h.get(n)
		if err != nil {
			t.Fatal(err)
		}
		before[job.ID(o.Status.JobID)] = o
	}

	if err := h.broker.RestartAs(testbroker.RestartFresh); err != nil {
		t.Fatal(err)
	}
	// Another user of the new instance gets the first two IDs.
	conn, ctx := brokerClient(t, h)
	var others []job.ID
	for i := range 2 {
		id, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, fmt.Sprintf("someone-elses-job-%d", i)), job.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if before[id] == nil {
			t.Fatalf("the fresh instance gave ID %s, none of the old ones: no collision to test", id)
		}
		others = append(others, id)
	}
	deleted, kept := before[others[0]], before[others[1]]
	var gone *fluxjobv1.FluxJob
	for _, o := range before {
		if o != deleted && o != kept {
			gone = o
		}
	}
	// Deleted while no controller runs: the next one finalizes it.
	if err := h.c.Delete(context.Background(), deleted); err != nil {
		t.Fatal(err)
	}

	h.start()
	h.waitGone(deleted.Name, 30*time.Second)
	obj := h.waitPhase(kept.Name, fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInstanceReplaced)
	if !strings.Contains(obj.Status.Message, "another job") || !strings.Contains(obj.Status.Message, "neither followed nor cancelled") {
		t.Errorf("message %q does not say the ID now names another job", obj.Status.Message)
	}
	if strings.Contains(obj.Status.Message, "someone-elses-job") {
		t.Errorf("message %q shows the other job's name", obj.Status.Message)
	}
	// Nothing of the other job: same ID, same instance, same events.
	if obj.Status.JobID != kept.Status.JobID || obj.Status.InstanceID != kept.Status.InstanceID {
		t.Errorf("status now says job %d of instance %q, was %d of %q", obj.Status.JobID, obj.Status.InstanceID, kept.Status.JobID, kept.Status.InstanceID)
	}
	if got, want := eventNames(obj.Status.Events), eventNames(kept.Status.Events); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("status.events %v, was %v before the new instance", got, want)
	}
	if obj.Status.ExitStatus != nil || obj.Status.StartTime != nil {
		t.Errorf("status shows an exit status %v or start time %v it never had", obj.Status.ExitStatus, obj.Status.StartTime)
	}
	h.waitEvent(kept.Name, fluxjobv1.ReasonInstanceReplaced, 10*time.Second)

	obj = h.waitPhase(gone.Name, fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInstanceReplaced)
	if !strings.Contains(obj.Status.Message, gone.Status.InstanceID) {
		t.Errorf("message %q does not name the replaced instance %s", obj.Status.Message, gone.Status.InstanceID)
	}

	// The other user's jobs run to their end, never cancelled.
	h.broker.PauseScheduling(false)
	for _, id := range others {
		for _, ev := range waitEnded(t, h, id) {
			if ev.Name == "exception" {
				t.Fatalf("the other user's job %s got an exception: %v", id, ev.Context)
			}
		}
	}
	if n := len(h.broker.Jobs()); n != len(others) {
		t.Fatalf("the new instance has %d jobs, want only the other user's %d: a lost job was submitted again", n, len(others))
	}
}

// waitEnded waits until job id's eventlog has clean and returns it.
func waitEnded(t *testing.T, h *harness, id job.ID) []job.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := h.brokerEvents(id)
		if n := len(evs); n > 0 && evs[n-1].Name == "clean" {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not end: %v", id, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// namedJobspec is a jobspec running cmd, with job name name.
func namedJobspec(t *testing.T, cmd []string, name string) []byte {
	t.Helper()
	js, err := job.FromCommand(cmd, job.CommandOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	b, err := js.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEnvtestFreshSubmissionAsksNoJobList: a FluxJob without a submit
// marker is submitted without any job-list request (O(1) broker work,
// counted at the broker); only re-attaching after a restart checks the
// job by ID (list-id), once per FluxJob. The marker's anchor costs one
// job-manager.getinfo per connection, not per FluxJob.
func TestEnvtestFreshSubmissionAsksNoJobList(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	names := []string{"a", "b", "c", "d", "e"}
	for _, n := range names {
		h.create(n, cmdSpec("true"))
	}
	h.waitAll(names, 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
	if n := h.broker.RequestCount("job-ingest.submit"); n != len(names) {
		t.Fatalf("%d submissions for %d FluxJobs", n, len(names))
	}
	for _, topic := range []string{"job-list.list", "job-list.list-id"} {
		if n := h.broker.RequestCount(topic); n != 0 {
			t.Errorf("%d %s requests for fresh submissions, want 0", n, topic)
		}
	}
	if n := h.broker.RequestCount("job-manager.getinfo"); n != 1 {
		t.Errorf("%d job-manager.getinfo requests for %d fresh submissions, want 1 (the anchor, once per connection)", n, len(names))
	}
}

// TestEnvtestMarkerCopiesAndDamage: a FluxJob created with a copy of
// another FluxJob's marker (a manifest exported with kubectl get -o yaml)
// is submitted at once, without a lookup; one created with an unreadable
// marker is looked up by name before it is submitted (the damaged marker
// counts as an attempt at creation), and both run exactly once.
func TestEnvtestMarkerCopiesAndDamage(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: 200 * time.Millisecond})
	copied, err := submitMarker{UID: "someone-else", At: fluxjobv1.NewPreciseTime(time.Now().Add(-time.Hour)), Instance: "default"}.encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, annotation string }{
		{"copied", copied},
		{"damaged", "{not json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: tc.name,
				Annotations: map[string]string{fluxjobv1.SubmitAttemptAnnotation: tc.annotation}}, Spec: cmdSpec("true")}
			if err := h.c.Create(context.Background(), obj); err != nil {
				t.Fatal(err)
			}
		})
	}
	h.start()
	h.waitAll([]string{"copied", "damaged"}, 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
	if n := h.broker.RequestCount("job-ingest.submit"); n != 2 {
		t.Fatalf("%d submissions for 2 FluxJobs", n)
	}
	// Only the damaged marker is looked up (job-list by name, then the
	// catch-up before its submission).
	if n := h.broker.RequestCount("job-list.list"); n == 0 {
		t.Error("the FluxJob with a damaged marker was submitted without a lookup")
	}
	if n := h.broker.RequestCount("job-manager.getinfo"); n != 2 {
		t.Errorf("%d job-manager.getinfo requests, want 2: the damaged marker's catch-up, and the anchor (once per connection)", n)
	}
	for _, name := range []string{"copied", "damaged"} {
		o, err := h.get(name)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := annotationMarker(o); !ok || m.UID != o.UID {
			t.Errorf("%s: the controller's own marker did not replace the annotation: %v", name, o.Annotations)
		}
	}
}

// staleClient serves Get from a snapshot taken earlier, as a lagging
// informer cache would.
type staleClient struct {
	client.Client
	stale *fluxjobv1.FluxJob
}

func (c *staleClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if fj, ok := obj.(*fluxjobv1.FluxJob); ok && key.Name == c.stale.Name {
		c.stale.DeepCopyInto(fj)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestEnvtestStaleCacheCannotSubmit: an earlier controller wrote the
// marker and submitted; this controller's cache still shows the object
// from before (no marker). Its marker write must fail on the
// resourceVersion precondition, and nothing may be submitted. The earlier
// controller's marker is this version's (the annotation, with the
// finalizer) or an earlier version's (status.submitAttemptTime).
func TestEnvtestStaleCacheCannotSubmit(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	conn := broker.NewConnector(broker.ConnectorOptions{URI: h.broker.URI(), Workers: 1, CheckInterval: 50 * time.Millisecond})
	defer runConnector(t, conn)()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if connected, _ := conn.State(); connected {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the connector never connected")
		}
	}
	for _, tc := range []struct {
		name string
		mark func(obj *fluxjobv1.FluxJob)
	}{
		{"annotation", func(obj *fluxjobv1.FluxJob) { h.markAt(obj, time.Now()) }},
		{"status", func(obj *fluxjobv1.FluxJob) { h.markStatusAt(obj, time.Now()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "stale-" + tc.name},
				Spec: cmdSpec("sleep", "300")}
			if err := h.c.Create(context.Background(), obj); err != nil {
				t.Fatal(err)
			}
			stale := obj.DeepCopy()
			// The earlier controller: marker, then the submission.
			tc.mark(obj)
			spec, fail := jobspec.Build(obj)
			if fail != nil {
				t.Fatal(fail.Message)
			}
			before := len(h.broker.Jobs())
			submitDirect(t, h.broker.URI(), spec)

			r := &FluxJobReconciler{Client: &staleClient{Client: h.c, stale: stale}, Scheme: testScheme(), Flux: conn,
				Tracker: broker.NewTracker(16), now: time.Now}
			r.Options.defaults()
			_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key(obj)})
			if !apierrors.IsConflict(err) || !strings.Contains(err.Error(), "recording the submission attempt") {
				t.Fatalf("Reconcile with a stale cache: %v, want a conflict on the marker write", err)
			}
			if n := len(h.broker.Jobs()) - before; n != 1 {
				t.Fatalf("the broker has %d new jobs, want the earlier controller's only", n)
			}
			if _, tracked := r.Tracker.Get(obj.UID); tracked {
				t.Fatal("a submission was started")
			}
		})
	}
}

// submitNoWait submits a FluxJob's jobspec straight to the broker, as a
// controller that crashed right after would have, without waiting for
// job-list.
func submitNoWait(t *testing.T, h *harness, obj *fluxjobv1.FluxJob) job.ID {
	t.Helper()
	spec, fail := jobspec.Build(obj)
	if fail != nil {
		t.Fatal(fail.Message)
	}
	conn, ctx := brokerClient(t, h)
	id, err := job.Submit(ctx, conn, spec, job.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// markAt writes a submission marker at time at, as this controller
// does: the annotation, with the finalizer, and the anchor job (the
// broker's newest job now, job-manager.getinfo).
func (h *harness) markAt(obj *fluxjobv1.FluxJob, at time.Time) {
	h.t.Helper()
	h.markAnchored(obj, at, h.maxJobID())
}

// maxJobID is the broker's newest job ID (job-manager.getinfo).
func (h *harness) maxJobID() job.ID {
	h.t.Helper()
	conn, ctx := brokerClient(h.t, h)
	var info struct {
		MaxJobID job.ID `json:"max_jobid"`
	}
	if err := conn.RPC(ctx, "job-manager.getinfo", nil, &info); err != nil {
		h.t.Fatal(err)
	}
	return info.MaxJobID
}

// markAnchored is markAt with the anchor job after.
func (h *harness) markAnchored(obj *fluxjobv1.FluxJob, at time.Time, after job.ID) {
	h.t.Helper()
	base := obj.DeepCopy()
	if err := (submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(at), Instance: "default", After: after}).setOn(obj); err != nil {
		h.t.Fatal(err)
	}
	if err := h.c.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		h.t.Fatal(err)
	}
}

// markStatusAt writes a submission marker at time at as earlier versions
// of the controller did: status.submitAttemptTime.
func (h *harness) markStatusAt(obj *fluxjobv1.FluxJob, at time.Time) {
	h.t.Helper()
	base := obj.DeepCopy()
	pt := fluxjobv1.NewPreciseTime(at)
	obj.Status.SubmitAttemptTime = &pt
	if err := h.c.Status().Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		h.t.Fatal(err)
	}
}

// TestEnvtestAdoptUnderJobListLag: job-list lists jobs 3s late, the adopt
// window is 0.5s. A controller died between the submission and the
// status write; the next one must adopt the job once job-list has caught
// up (job-manager.getinfo + list-id), not submit it again.
func TestEnvtestAdoptUnderJobListLag(t *testing.T) {
	const lag = 3 * time.Second
	h := newHarness(t, testbroker.Options{ListLag: lag}, Options{AdoptWindow: 500 * time.Millisecond, UnreachableRetry: 200 * time.Millisecond})
	obj := h.create("lagged", cmdSpec("true"))
	h.markAt(obj, time.Now())
	getinfo := h.broker.RequestCount("job-manager.getinfo")
	id := submitNoWait(t, h, obj)
	h.start()
	obj = h.waitPhase("lagged", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if job.ID(obj.Status.JobID) != id {
		t.Fatalf("status job %s, want the adopted %s", obj.Status.JobIDF58, id)
	}
	if ids := h.broker.Jobs(); len(ids) != 1 {
		t.Fatalf("broker has %d jobs (%v): submitted twice under a %s job-list lag", len(ids), ids, lag)
	}
	if n := h.broker.RequestCount("job-manager.getinfo"); n == getinfo {
		t.Error("the window passed without the job-list catch-up barrier")
	}
	h.waitEvent("lagged", "Adopted", 10*time.Second)
}

// TestEnvtestBoundedLookupAdoptsAfterCrash: with a long history of jobs
// that ended before the marker (one of them, from long ago, even carries
// the FluxJob's name), the bounded lookup after a crash finds and adopts
// the job the crashed controller submitted, and only that one.
func TestEnvtestBoundedLookupAdoptsAfterCrash(t *testing.T) {
	var skew atomic.Int64 // the broker's clock runs skew behind
	skew.Store(int64(2 * time.Hour))
	h := newHarness(t, testbroker.Options{Now: func() time.Time { return time.Now().Add(-time.Duration(skew.Load())) }}, Options{})
	obj := h.create("crashed", cmdSpec("true"))
	conn, ctx := brokerClient(t, h)
	spec, _ := jobspec.Build(obj)
	old, err := job.Submit(ctx, conn, spec, job.SubmitOptions{}) // two hours ago
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, "history"), job.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitEnded(t, h, old)
	skew.Store(0)
	// The newest job the crashed controller saw before its marker (its
	// anchor): the lookup is bounded by its submission.
	if _, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, "recent"), job.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	h.markAt(obj, time.Now())
	id := submitNoWait(t, h, obj)
	if ids, err := broker.Lookup(ctx, conn, jobspec.Name(obj), readMarker(obj).After, 5*time.Second); err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("bounded lookup: %v %v, want only %s (not the one from two hours ago, %s)", ids, err, id, old)
	}
	h.start()
	obj = h.waitPhase("crashed", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if job.ID(obj.Status.JobID) != id {
		t.Fatalf("adopted %s, want %s", obj.Status.JobIDF58, id)
	}
	if n := h.broker.RequestCount("job-ingest.submit"); n != 53 {
		t.Fatalf("%d submissions, want 53 (none by the controller)", n)
	}
}

// TestEnvtestPurgeNeverLosesResult: the instance purges every inactive
// job but the newest at each 10ms heartbeat; every FluxJob still ends with
// its job's result, and none is submitted twice.
func TestEnvtestPurgeNeverLosesResult(t *testing.T) {
	// Realistic phase delays: the controller's eventlog watch starts at
	// the submission, some 40ms before a job can end and be purged.
	h := newHarness(t, testbroker.Options{Delays: testbroker.RealisticDelays(),
		Purge: &testbroker.Purge{NumLimit: 1, Period: 10 * time.Millisecond}}, Options{})
	h.start()
	cmds := [][]string{{"true"}, {"false"}, {"exit", "3"}, {"true"}, {"false"}, {"exit", "5"}, {"true"}, {"true"}}
	want := []int32{0, 1, 3, 0, 1, 5, 0, 0}
	var names []string
	for i, c := range cmds {
		n := fmt.Sprintf("p%d", i)
		names = append(names, n)
		h.create(n, cmdSpec(c...))
	}
	h.waitAll(names, 60*time.Second, "a final phase", terminal)
	for i, n := range names {
		obj, err := h.get(n)
		if err != nil {
			t.Fatal(err)
		}
		if obj.Status.ExitStatus == nil || *obj.Status.ExitStatus != want[i] {
			t.Errorf("%s: exit status %v, want %d (phase %s, %q)", n, obj.Status.ExitStatus, want[i], obj.Status.Phase, obj.Status.Message)
		}
	}
	if h.broker.Purged() == 0 {
		t.Fatal("the broker purged nothing: the test tested nothing")
	}
	if n := h.broker.RequestCount("job-ingest.submit"); n != len(names) {
		t.Fatalf("%d submissions for %d FluxJobs", n, len(names))
	}
}

// TestEnvtestMarkerOlderThanPurgeAge: a marker older than the instance
// keeps finished jobs, and no job of that name: the job may have run and
// been purged, so the FluxJob fails SubmissionUnknown and nothing is
// submitted.
func TestEnvtestMarkerOlderThanPurgeAge(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{PurgeAge: time.Hour})
	obj := h.create("ancient", cmdSpec("true"))
	h.markAt(obj, time.Now().Add(-2*time.Hour))
	h.start()
	obj = h.waitPhase("ancient", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonSubmissionUnknown)
	if n := h.broker.RequestCount("job-ingest.submit"); n != 0 {
		t.Fatalf("%d submissions, want none", n)
	}
}

// TestEnvtestBrokerCrashKeepsPendingJobs: the broker crashes and comes
// back on the same state (flux-core 0.88 semantics in the test broker):
// pending FluxJobs run to completion, the running one ends Failed with the
// exec exception flux-core raises for a job it cannot re-attach to, and
// nothing is submitted twice.
func TestEnvtestBrokerCrashKeepsPendingJobs(t *testing.T) {
	h := newHarness(t, testbroker.Options{Cores: 1}, Options{UnreachableRetry: 200 * time.Millisecond})
	h.start()
	h.create("running", cmdSpec("sleep", "300"))
	h.waitPhase("running", fluxjobv1.PhaseRunning, 30*time.Second)
	pending := []string{"pending-0", "pending-1", "pending-2"}
	for _, n := range pending {
		h.create(n, cmdSpec("true"))
	}
	h.waitAll(pending, 30*time.Second, "Submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSubmitted })
	instance, _ := h.get("running")
	if err := h.broker.RestartAs(testbroker.RestartCrash); err != nil {
		t.Fatal(err)
	}
	obj := h.waitPhase("running", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonException)
	if obj.Status.Exception == nil || obj.Status.Exception.Type != "exec" || obj.Status.Exception.Note != testbroker.ReattachFailedNote {
		t.Errorf("exception %+v, want exec %q", obj.Status.Exception, testbroker.ReattachFailedNote)
	}
	if obj.Status.InstanceID == "" || obj.Status.InstanceID != instance.Status.InstanceID {
		t.Errorf("instance %q after a restart on the same state, was %q", obj.Status.InstanceID, instance.Status.InstanceID)
	}
	h.waitAll(pending, 30*time.Second, "Succeeded", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSucceeded })
	h.checkMatchesBroker(append(pending, "running"))
	for _, n := range pending {
		o, _ := h.get(n)
		if !strings.Contains(strings.Join(eventNames(o.Status.Events), ","), "flux-restart") {
			t.Errorf("%s: events %v lack flux-restart", n, eventNames(o.Status.Events))
		}
	}
}

// TestEnvtestDeleteUnderJobListLag: a controller died between the
// submission and the status write, and the FluxJob was deleted meanwhile.
// job-list lists jobs 3s late, the adopt window is 0.5s: the next
// controller must find the running Flux job behind the catch-up barrier
// and cancel it before it lets the FluxJob go. Against 7f7e1d7 it released
// the finalizer at the end of the adopt window and the job ran on.
func TestEnvtestDeleteUnderJobListLag(t *testing.T) {
	const lag = 3 * time.Second
	h := newHarness(t, testbroker.Options{ListLag: lag}, Options{AdoptWindow: 500 * time.Millisecond, UnreachableRetry: 200 * time.Millisecond})
	obj := h.create("doomed", cmdSpec("sleep", "300"))
	h.markAt(obj, time.Now())
	getinfo := h.broker.RequestCount("job-manager.getinfo")
	id := submitNoWait(t, h, obj)
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitGone("doomed", 30*time.Second)
	var cancelled bool
	for _, ev := range h.brokerEvents(id) {
		cancelled = cancelled || ev.Name == "exception" && ev.Context["type"] == "cancel"
	}
	if !cancelled {
		t.Fatalf("the deleted FluxJob's Flux job %s was not cancelled under a %s job-list lag: %v", id, lag, h.brokerEvents(id))
	}
	if n := h.broker.RequestCount("job-manager.getinfo"); n == getinfo {
		t.Error("the deletion did not pass the job-list catch-up barrier")
	}
}

// TestEnvtestLookupUnderClockSkew: the broker's clock is ten minutes
// behind or ahead of the manager's. A controller wrote its marker (with
// its anchor, the newest job it had seen), submitted, and died; the job
// ended while no controller ran. The next controller must find and adopt
// it: the lookup's bound is the anchor's submission time, on the broker's
// clock. Against 7f7e1d7 (since = marker time less one minute, on the
// manager's clock) the broker 10 minutes behind hid the job and it was
// submitted again. A FluxJob the controller submits itself records an
// anchor job submitted before it.
func TestEnvtestLookupUnderClockSkew(t *testing.T) {
	for _, offset := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
		t.Run(offset.String(), func(t *testing.T) {
			h := newHarness(t, testbroker.Options{ClockOffset: offset}, Options{AdoptWindow: 500 * time.Millisecond})
			conn, ctx := brokerClient(t, h)
			for range 3 { // jobs before the marker: the anchor is one of them
				id, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, "history"), job.SubmitOptions{})
				if err != nil {
					t.Fatal(err)
				}
				waitEnded(t, h, id)
			}
			obj := h.create("skewed", cmdSpec("true"))
			h.markAt(obj, time.Now())
			if readMarker(obj).After == 0 {
				t.Fatal("the marker has no anchor: the test would not test the bound")
			}
			id := submitNoWait(t, h, obj)
			waitEnded(t, h, id)
			h.start()
			obj = h.waitPhase("skewed", fluxjobv1.PhaseSucceeded, 30*time.Second)
			if job.ID(obj.Status.JobID) != id {
				t.Fatalf("status job %s, want the adopted %s", obj.Status.JobIDF58, id)
			}
			if n := h.broker.RequestCount("job-ingest.submit"); n != 4 {
				t.Fatalf("%d submissions, want 4 (none by the controller): the job was submitted again with the broker's clock %s off", n, offset)
			}
			h.waitEvent("skewed", "Adopted", 10*time.Second)

			// The controller's own marker names a job submitted before it.
			h.create("fresh", cmdSpec("true"))
			fresh := h.waitPhase("fresh", fluxjobv1.PhaseSucceeded, 30*time.Second)
			if after := readMarker(fresh).After; after == 0 || after >= job.ID(fresh.Status.JobID) {
				t.Fatalf("the controller's marker anchor %s, want a job before %s", after, fresh.Status.JobIDF58)
			}
		})
	}
}

// TestEnvtestGateChangedAcrossCrash: a controller admitted a FluxJob,
// wrote its marker, submitted and died before recording the job ID; the
// next controller runs with a policy that no longer admits the FluxJob
// (its namespace, or its privileges). The Flux job exists and runs: the
// controller must find it by name and follow it, not fail the FluxJob
// over a gate it passed, and deleting the FluxJob must cancel the job.
// Against f137d61 the FluxJob was failed at the gate and its deletion
// left the Flux job running.
func TestEnvtestGateChangedAcrossCrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		spec fluxjobv1.FluxJobSpec
	}{
		{name: "namespace", opts: Options{AllowedNamespaces: []string{"somewhere-else"}}, spec: cmdSpec("sleep", "300")},
		{name: "privilege", spec: fluxjobv1.FluxJobSpec{Command: []string{"sleep", "300"}, Urgency: ptrTo(int32(31))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.AdoptWindow = 500 * time.Millisecond
			h := newHarness(t, testbroker.Options{}, tc.opts)
			obj := h.create("admitted-before", tc.spec)
			h.markAt(obj, time.Now())
			id := submitNoWait(t, h, obj)
			h.start()
			obj = h.waitFor("admitted-before", 30*time.Second, "the earlier submission's job ID", func(o *fluxjobv1.FluxJob) bool {
				return o.Status.JobID != 0 || o.Status.Phase.IsTerminal()
			})
			if job.ID(obj.Status.JobID) != id || obj.Status.Phase.IsTerminal() {
				t.Fatalf("phase %s job %q, want the running Flux job %s followed (conditions %+v)", obj.Status.Phase, obj.Status.JobIDF58, id, obj.Status.Conditions)
			}
			h.waitEvent("admitted-before", "Adopted", 10*time.Second)
			if n := h.broker.RequestCount(submitTopic); n != 1 {
				t.Fatalf("%d submit requests, want 1 (the crashed controller's)", n)
			}
			if err := h.c.Delete(context.Background(), obj); err != nil {
				t.Fatal(err)
			}
			h.waitGone("admitted-before", 30*time.Second)
			var cancelled bool
			for _, ev := range h.brokerEvents(id) {
				cancelled = cancelled || ev.Name == "exception" && ev.Context["type"] == "cancel"
			}
			if !cancelled {
				t.Fatalf("the deleted FluxJob's Flux job %s was not cancelled: %v", id, h.brokerEvents(id))
			}
		})
	}
}
