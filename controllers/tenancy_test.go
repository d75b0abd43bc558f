package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// drainEvents returns the events the fake recorder holds.
func (w *fakeWorld) drainEvents() []string {
	var out []string
	for len(w.rec.Events) > 0 {
		out = append(out, <-w.rec.Events)
	}
	return out
}

// TestPrivilegedFieldsFakeClient: urgency above 16 and waitable are the
// instance owner's powers; only FluxJobs of --privileged-namespaces get
// them. Others end Failed (PrivilegeNotAllowed) with a Warning event and
// reach no Flux job; a privileged namespace's job runs with them.
func TestPrivilegedFieldsFakeClient(t *testing.T) {
	for _, tc := range []struct {
		name       string
		privileged []string
		urgency    int32
		waitable   bool
		refused    bool
	}{
		{name: "urgency 17 refused", urgency: 17, refused: true},
		{name: "urgency 31 refused, other namespace privileged", privileged: []string{"other"}, urgency: 31, refused: true},
		{name: "waitable refused", urgency: 16, waitable: true, refused: true},
		{name: "urgency 16 allowed", urgency: 16},
		{name: "urgency 25 in a privileged namespace", privileged: []string{"ns"}, urgency: 25},
		{name: "waitable in a privileged namespace", privileged: []string{"ns"}, urgency: 16, waitable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := fakeJob("j", "true")
			obj.Spec.Urgency, obj.Spec.Waitable = ptrTo(tc.urgency), tc.waitable
			w := newFakeWorld(t, Options{PrivilegedNamespaces: tc.privileged}, obj)
			if tc.refused {
				got := w.drive("j", phaseIs(fluxjobv1.PhaseFailed))
				requireCondition(t, got, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonPrivilegeNotAllowed)
				if !strings.Contains(got.Status.Message, "--privileged-namespaces") {
					t.Errorf("message %q does not name the flag", got.Status.Message)
				}
				if ids := w.broker.Jobs(); len(ids) != 0 || submitAttempt(got) != nil || hasFinalizer(got) {
					t.Fatalf("refused FluxJob reached Flux: broker jobs %v, submission marker %v, finalizers %v", ids, submitAttempt(got), got.Finalizers)
				}
				if evs := w.drainEvents(); !containsPrefix(evs, "Warning "+fluxjobv1.ReasonPrivilegeNotAllowed) {
					t.Errorf("events %q lack a Warning %s", evs, fluxjobv1.ReasonPrivilegeNotAllowed)
				}
				return
			}
			got := w.drive("j", phaseIs(fluxjobv1.PhaseSucceeded))
			evs, ok := w.broker.Eventlog(job.ID(got.Status.JobID))
			if !ok || !strings.Contains(evs, `"urgency":`+itoa(int(tc.urgency))) {
				t.Fatalf("the Flux job's eventlog lacks urgency %d:\n%s", tc.urgency, evs)
			}
		})
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestUrgencyRaiseNotPrivilegedFakeClient: raising the urgency of a
// submitted job above 16 is refused like a change Flux refuses
// (UrgencyApplied=False, a Warning event), the job keeps its urgency and
// goes on.
func TestUrgencyRaiseNotPrivilegedFakeClient(t *testing.T) {
	w := newFakeWorld(t, Options{}, fakeJob("u", "true"))
	w.broker.PauseScheduling(true)
	obj := w.drive("u", func(o *fluxjobv1.FluxJob, err error) bool {
		return err == nil && o.Status.Urgency != nil && *o.Status.Urgency == 16
	})
	obj.Spec.Urgency = ptrTo(int32(24))
	obj.Generation = 2
	if err := w.c.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	obj = w.drive("u", func(o *fluxjobv1.FluxJob, err error) bool {
		return err == nil && meta.IsStatusConditionFalse(o.Status.Conditions, fluxjobv1.ConditionUrgencyApplied)
	})
	c := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionUrgencyApplied)
	if !strings.Contains(c.Message, "--privileged-namespaces") || *obj.Status.Urgency != 16 {
		t.Fatalf("UrgencyApplied %q, status urgency %d", c.Message, *obj.Status.Urgency)
	}
	if evs := w.drainEvents(); !containsPrefix(evs, "Warning "+fluxjobv1.ReasonUrgencyRejected) {
		t.Errorf("events %q lack a Warning %s", evs, fluxjobv1.ReasonUrgencyRejected)
	}
	if log, _ := w.broker.Eventlog(job.ID(obj.Status.JobID)); strings.Contains(log, `"name":"urgency"`) {
		t.Fatalf("an urgency change reached Flux:\n%s", log)
	}
	w.broker.PauseScheduling(false)
	w.drive("u", phaseIs(fluxjobv1.PhaseSucceeded))
}

// TestWaitableReapedFakeClient: the controller collects a waitable job
// (job-manager.wait) once its result is in the status, so the broker
// keeps no zombie; a waitable job nobody waits for stays one (the control,
// submitted directly).
func TestWaitableReapedFakeClient(t *testing.T) {
	for _, cmd := range [][]string{{"true"}, {"false"}} {
		t.Run(cmd[0], func(t *testing.T) {
			obj := fakeJob("w", cmd...)
			obj.Spec.Waitable = true
			w := newFakeWorld(t, Options{PrivilegedNamespaces: []string{"ns"}}, obj)
			got := w.drive("w", func(o *fluxjobv1.FluxJob, err error) bool {
				return err == nil && meta.IsStatusConditionTrue(o.Status.Conditions, fluxjobv1.ConditionReaped)
			})
			if !got.Status.Phase.IsTerminal() {
				t.Fatalf("reaped before the result was recorded: phase %s", got.Status.Phase)
			}
			requireCondition(t, got, fluxjobv1.ConditionReaped, metav1.ConditionTrue, "Waited")

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := flux.Dial(ctx, w.broker.URI())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := job.Wait(ctx, conn, job.ID(got.Status.JobID)); !errors.Is(err, syscall.ECHILD) {
				t.Fatalf("wait on the reaped job: %v, want ECHILD (nothing left to wait for)", err)
			}
			// The control: a waitable job nobody reaps is still there.
			spec, _ := jobspec.Build(fakeJob("control", "true"))
			id, err := job.Submit(ctx, conn, spec, job.SubmitOptions{Waitable: true})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := job.Wait(ctx, conn, id); err != nil || !res.Success {
				t.Fatalf("wait on the unreaped control job: %+v %v", res, err)
			}
			// More reconciles wait no more (the condition is the record).
			w.drive("w", phaseIs(got.Status.Phase))
		})
	}
}

// TestCacheTransformBoundsSpec: the cache keeps no spec of a FluxJob it
// will refuse for its namespace, and only the size of jobspec inputs over
// MaxJobspecBytes, which the controller then refuses as JobspecTooLarge;
// everything else is kept as it is.
func TestCacheTransformBoundsSpec(t *testing.T) {
	big := strings.Repeat("x", fluxjobv1.MaxJobspecBytes)
	attempt := fluxjobv1.NewPreciseTime(time.Unix(1, 0))
	for _, tc := range []struct {
		name      string
		ns        string
		spec      fluxjobv1.FluxJobSpec
		status    fluxjobv1.FluxJobStatus
		dropAll   bool // spec gone but urgency
		tooLarge  bool // spec replaced by its size
		unchanged bool
	}{
		{name: "allowed, small", ns: "a", spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}}, unchanged: true},
		{name: "not allowed, never submitted", ns: "b", spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}, Urgency: ptrTo(int32(3))}, dropAll: true},
		// A marker grants nothing (route.go): without a job ID the
		// FluxJob is refused before any submission, its spec unread.
		{name: "not allowed, marker without a job ID", ns: "b", spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}},
			status: fluxjobv1.FluxJobStatus{SubmitAttemptTime: &attempt}, dropAll: true},
		{name: "not allowed, submitted before", ns: "b", spec: fluxjobv1.FluxJobSpec{Command: []string{"true"}},
			status: fluxjobv1.FluxJobStatus{SubmitAttemptTime: &attempt, JobID: 42}, unchanged: true},
		{name: "jobspec too large", ns: "a", spec: fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(`{"x":"` + big + `"}`)}}, tooLarge: true},
		{name: "env too large", ns: "a", spec: fluxjobv1.FluxJobSpec{Command: []string{"true"},
			Env: []fluxjobv1.EnvVar{{Name: "A", Value: big[:len(big)/2]}, {Name: "B", Value: big[:len(big)/2]}}}, tooLarge: true},
		{name: "command words too large", ns: "a", spec: fluxjobv1.FluxJobSpec{Command: []string{"echo", big}}, tooLarge: true},
		{name: "just under", ns: "a", spec: fluxjobv1.FluxJobSpec{Command: []string{big[:fluxjobv1.MaxJobspecBytes-4], "a"}}, unchanged: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: tc.ns, Name: "j", UID: "u"}, Spec: tc.spec, Status: tc.status}
			orig := obj.DeepCopy()
			out, err := CacheTransformFor(CacheOptions{AllowedNamespaces: []string{"a"}})(obj)
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*fluxjobv1.FluxJob)
			switch {
			case tc.unchanged:
				if jobspec.InputBytes(&got.Spec) != jobspec.InputBytes(&orig.Spec) || func() bool {
					if got.Spec.Jobspec == nil {
						return false
					}
					_, dropped := got.Spec.Jobspec.Object.(*jobspec.Dropped)
					return dropped
				}() {
					t.Fatalf("spec changed: %d -> %d bytes", jobspec.InputBytes(&orig.Spec), jobspec.InputBytes(&got.Spec))
				}
			case tc.dropAll:
				want := fluxjobv1.FluxJobSpec{Urgency: orig.Spec.Urgency}
				if jobspec.InputBytes(&got.Spec) != 0 || got.Spec.Command != nil || (want.Urgency != nil && *got.Spec.Urgency != *want.Urgency) {
					t.Fatalf("spec kept: %+v", got.Spec)
				}
			case tc.tooLarge:
				cp := got.DeepCopy() // the cache hands out deep copies
				_, fail := jobspec.Build(cp)
				if fail == nil || fail.Reason != fluxjobv1.ReasonJobspecTooLarge || !strings.Contains(fail.Message, itoa(jobspec.InputBytes(&orig.Spec))) {
					t.Fatalf("buildJobspec of the cached copy: %+v, want JobspecTooLarge with the size", fail)
				}
				if jobspec.InputBytes(&got.Spec) != 0 {
					t.Fatalf("the cache kept %d bytes of the spec", jobspec.InputBytes(&got.Spec))
				}
				// The controller's patches are computed between two copies
				// of the cached object: the placeholder never reaches the
				// API server.
				mod := cp.DeepCopy()
				mod.Finalizers = []string{fluxjobv1.CancelFinalizer}
				data, err := client.MergeFrom(cp).Data(mod)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(data), "spec") || strings.Contains(string(data), "droppedBytes") {
					t.Fatalf("patch %s carries the spec", data)
				}
			}
		})
	}
}
