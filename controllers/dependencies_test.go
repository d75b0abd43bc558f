package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// dependsOn is a command spec that depends on the named FluxJob.
func dependsOn(name string, cond fluxjobv1.DependencyCondition, cmd ...string) fluxjobv1.FluxJobSpec {
	return fluxjobv1.FluxJobSpec{Command: cmd, DependsOn: []fluxjobv1.Dependency{{Name: name, Condition: cond}}}
}

// patchSpec changes a FluxJob's spec as a user would.
func (h *harness) patchSpec(name string, fn func(*fluxjobv1.FluxJobSpec)) {
	h.t.Helper()
	obj, err := h.get(name)
	if err != nil {
		h.t.Fatal(err)
	}
	base := obj.DeepCopy()
	fn(&obj.Spec)
	if err := h.c.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		h.t.Fatalf("patching FluxJob %s: %v", name, err)
	}
}

// fluxEventIndex returns the position of the first event named name in
// the broker's eventlog of id whose context has key=value (any value if
// key is empty), or -1.
func (h *harness) fluxEventIndex(id int64, name, key string, value any) int {
	h.t.Helper()
	for i, ev := range h.brokerEvents(job.ID(id)) {
		if ev.Name == name && (key == "" || ev.Context[key] == value) {
			return i
		}
	}
	return -1
}

// TestEnvtestDependsOn: a dependant is submitted with the dependency's Flux
// job ID in the RFC 26 scheme of its condition, and Flux decides: it runs
// after the dependency (released), or ends Failed with reason
// DependencyFailed (Flux's dependency exception while it waited, or Flux's
// refusal of a dependency that already ended the wrong way).
func TestEnvtestDependsOn(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{})
	h.start()
	tests := []struct {
		name   string
		first  []string // the dependency's command
		cond   fluxjobv1.DependencyCondition
		desc   string
		after  bool // create the dependant only once the dependency ended
		phase  fluxjobv1.FluxJobPhase
		reason string
		msg    string
	}{
		{"afterok-success", []string{"sh", "-c", "sleep 500; true"}, fluxjobv1.DependAfterOK, "after-success",
			false, fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted, ""},
		{"afterok-failed", []string{"sh", "-c", "sleep 500; false"}, fluxjobv1.DependAfterOK, "after-success",
			false, fluxjobv1.PhaseFailed, fluxjobv1.ReasonDependencyFailed, "can never be satisfied"},
		{"afterok-failed-before", []string{"false"}, fluxjobv1.DependAfterOK, "",
			true, fluxjobv1.PhaseFailed, fluxjobv1.ReasonDependencyFailed, "failed or was canceled"},
		{"afterany-failed", []string{"sh", "-c", "sleep 500; false"}, fluxjobv1.DependAfterAny, "after-finish",
			false, fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted, ""},
		{"afternotok-failed", []string{"sh", "-c", "sleep 500; false"}, fluxjobv1.DependAfterNotOK, "after-failure",
			false, fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted, ""},
		{"after-started", []string{"sleep", "500"}, fluxjobv1.DependAfter, "after-start",
			false, fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, second := tc.name+"-a", tc.name+"-b"
			h.create(first, cmdSpec(tc.first...))
			if tc.after {
				h.waitFor(first, 30*time.Second, "finished", conditionIs(fluxjobv1.ConditionFinished, metav1.ConditionTrue, fluxjobv1.ReasonNonZeroExit))
			} else {
				// The dependant is submitted while the dependency runs.
				h.waitPhase(first, fluxjobv1.PhaseRunning, 30*time.Second)
			}
			h.create(second, dependsOn(first, tc.cond, "true"))
			b := h.waitPhase(second, tc.phase, 30*time.Second)
			a := h.waitFor(first, 30*time.Second, "finished", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase.IsTerminal() })
			requireCondition(t, b, fluxjobv1.ConditionFinished, metav1.ConditionTrue, tc.reason)
			if tc.msg != "" && !strings.Contains(b.Status.Message, tc.msg) {
				t.Fatalf("message %q lacks %q", b.Status.Message, tc.msg)
			}
			if tc.after {
				// Refused at submission: no Flux job.
				if b.Status.JobID != 0 {
					t.Fatalf("refused dependant has Flux job %s", b.Status.JobIDF58)
				}
				h.waitEvent(second, fluxjobv1.ReasonDependencyFailed, 10*time.Second)
				return
			}
			if tc.phase == fluxjobv1.PhaseSucceeded {
				requireCondition(t, b, fluxjobv1.ConditionDependenciesReady, metav1.ConditionTrue, fluxjobv1.ReasonDependenciesSubmitted)
			} else {
				requireCondition(t, b, fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, fluxjobv1.ReasonDependencyFailed)
			}
			desc := tc.desc + "=" + a.Status.JobIDF58
			add := h.fluxEventIndex(b.Status.JobID, "dependency-add", "description", desc)
			if add < 0 {
				t.Fatalf("Flux job of %s has no dependency-add %s: %v", second, desc, h.brokerEvents(job.ID(b.Status.JobID)))
			}
			if tc.phase == fluxjobv1.PhaseSucceeded {
				// Released only when the dependency met the condition.
				aEnd := h.fluxEventIndex(a.Status.JobID, "finish", "", nil)
				if tc.cond == fluxjobv1.DependAfter {
					aEnd = h.fluxEventIndex(a.Status.JobID, "start", "", nil)
				}
				bStart := h.brokerEvents(job.ID(b.Status.JobID))[h.fluxEventIndex(b.Status.JobID, "start", "", nil)].Timestamp
				if aT := h.brokerEvents(job.ID(a.Status.JobID))[aEnd].Timestamp; bStart < aT {
					t.Fatalf("dependant started at %f, before its dependency's %f", bStart, aT)
				}
				return
			}
			if b.Status.Exception == nil || b.Status.Exception.Type != "dependency" || b.Status.StartTime != nil {
				t.Fatalf("exception %+v, start %v: want Flux's dependency exception and no start", b.Status.Exception, b.Status.StartTime)
			}
		})
	}
}

// TestEnvtestDependsOnMissing: a dependency that does not exist is waited
// for and reported (DependenciesReady=False, DependencyNotFound, a Warning
// event), nothing is submitted; once it is created both run.
func TestEnvtestDependsOnMissing(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("later", dependsOn("first", "", "true"))
	obj := h.waitFor("later", 30*time.Second, "DependencyNotFound",
		conditionIs(fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, fluxjobv1.ReasonDependencyNotFound))
	if obj.Status.Phase != fluxjobv1.PhasePending || !strings.Contains(obj.Status.Message, `"first"`) {
		t.Fatalf("phase %s message %q", obj.Status.Phase, obj.Status.Message)
	}
	requireCondition(t, obj, fluxjobv1.ConditionFinished, metav1.ConditionFalse, fluxjobv1.ReasonInProgress)
	h.waitEvent("later", fluxjobv1.ReasonDependencyNotFound, 10*time.Second)
	if n := len(h.broker.Jobs()); n != 0 {
		t.Fatalf("broker has %d jobs while the dependency is missing", n)
	}
	h.create("first", cmdSpec("true"))
	h.waitPhase("later", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if n := len(h.broker.Jobs()); n != 2 {
		t.Fatalf("broker has %d jobs, want 2", n)
	}
}

// TestEnvtestDependsOnNeverSubmitted: cycles, and a dependency that ended
// without a Flux job, fail the dependant at once instead of holding it.
// A dependency on itself is refused by the API server.
func TestEnvtestDependsOnNeverSubmitted(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("x", dependsOn("y", "", "true"))
	h.create("y", dependsOn("z", "", "true"))
	h.create("z", dependsOn("x", fluxjobv1.DependAfterAny, "true"))
	for _, n := range []string{"x", "y", "z"} {
		obj := h.waitPhase(n, fluxjobv1.PhaseFailed, 30*time.Second)
		requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonDependencyCycle)
		requireCondition(t, obj, fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, fluxjobv1.ReasonDependencyCycle)
		if !strings.Contains(obj.Status.Message, "cycle") {
			t.Fatalf("%s: message %q", n, obj.Status.Message)
		}
	}
	// Rejected by the broker's validator: never gets a Flux job ID.
	raw := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
		`"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":"soon"}}}`
	h.create("invalid", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(raw)}})
	h.create("after-invalid", dependsOn("invalid", "", "true"))
	obj := h.waitPhase("after-invalid", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonDependencyFailed)
	if n := len(h.broker.Jobs()); n != 0 {
		t.Fatalf("broker has %d jobs, want none", n)
	}
	self := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "self"}, Spec: dependsOn("self", "", "true")}
	if err := h.c.Create(context.Background(), self); err == nil || !strings.Contains(err.Error(), "must not name the FluxJob itself") {
		t.Fatalf("creating a FluxJob that depends on itself: %v", err)
	}
}

// TestEnvtestDependsOnAcrossRestart: a dependant waiting for its
// dependency's job ID when the manager restarts is submitted once, with
// its dependency, after the restart.
func TestEnvtestDependsOnAcrossRestart(t *testing.T) {
	h := newHarness(t, testbroker.Options{TimeScale: 0.01}, Options{})
	h.start()
	h.create("step1", fluxjobv1.FluxJobSpec{Command: []string{"sleep", "30"}, Suspend: true})
	h.waitPhase("step1", fluxjobv1.PhaseSuspended, 30*time.Second)
	h.create("step2", dependsOn("step1", "", "true"))
	h.waitFor("step2", 30*time.Second, "waiting for step1",
		conditionIs(fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, fluxjobv1.ReasonWaitingForDependency))
	h.stop()
	h.start()
	obj := h.waitFor("step2", 30*time.Second, "still waiting after the restart",
		conditionIs(fluxjobv1.ConditionDependenciesReady, metav1.ConditionFalse, fluxjobv1.ReasonWaitingForDependency))
	if !strings.Contains(obj.Status.Message, "step1 (Suspended)") || submitAttempt(obj) != nil || len(h.broker.Jobs()) != 0 {
		t.Fatalf("message %q, broker jobs %v", obj.Status.Message, h.broker.Jobs())
	}
	h.patchSpec("step1", func(s *fluxjobv1.FluxJobSpec) { s.Suspend = false })
	b := h.waitPhase("step2", fluxjobv1.PhaseSucceeded, 30*time.Second)
	a := h.waitPhase("step1", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if n := len(h.broker.Jobs()); n != 2 {
		t.Fatalf("broker has %d jobs, want 2 (one each)", n)
	}
	if h.fluxEventIndex(b.Status.JobID, "dependency-add", "description", "after-success="+a.Status.JobIDF58) < 0 {
		t.Fatalf("step2's Flux job lost its dependency: %v", h.brokerEvents(job.ID(b.Status.JobID)))
	}
}
