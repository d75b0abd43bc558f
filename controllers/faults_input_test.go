package controllers

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// validJobspec is a Flux jobspec V1 that runs `true` on one core.
const validJobspec = `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
	`"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0}}}`

// badManifest is one hostile or mistaken FluxJob. Exactly one of
// rejected (a substring of the API server's error), failReason (the
// Failed condition's reason the controller must give; alternatives are
// separated by "|") and succeeds (the controller neutralises the problem
// and the job runs) is set.
type badManifest struct {
	name       string
	spec       string // spec as JSON
	rejected   string
	failReason string
	succeeds   bool
}

func badManifests() []badManifest {
	pad := strings.Repeat("x", fluxjobv1.MaxJobspecBytes)
	huge := strings.Repeat("y", 4<<20) // over the API server's 3 MiB request limit
	return []badManifest{
		// Rejected by the API server (CRD schema and CEL rules).
		{name: "both", spec: `{"command":["true"],"jobspec":` + validJobspec + `}`, rejected: "exactly one of spec.jobspec and spec.command must be set"},
		{name: "neither", spec: `{"urgency":3}`, rejected: "exactly one of spec.jobspec and spec.command must be set"},
		{name: "urgency-negative", spec: `{"command":["true"],"urgency":-1}`, rejected: "spec.urgency"},
		{name: "urgency-too-high", spec: `{"command":["true"],"urgency":32}`, rejected: "spec.urgency"},
		{name: "tasks-zero", spec: `{"command":["true"],"tasks":0}`, rejected: "spec.tasks"},
		{name: "tasks-negative", spec: `{"command":["true"],"tasks":-4}`, rejected: "spec.tasks"},
		{name: "cores-zero", spec: `{"command":["true"],"coresPerTask":0}`, rejected: "spec.coresPerTask"},
		{name: "nodes-zero", spec: `{"command":["true"],"nodes":0}`, rejected: "spec.nodes"},
		{name: "gpus-negative", spec: `{"command":["true"],"gpusPerTask":-1}`, rejected: "spec.gpusPerTask"},
		{name: "nodes-over-tasks", spec: `{"command":["true"],"tasks":2,"nodes":3}`, rejected: "spec.nodes must not be greater than spec.tasks"},
		{name: "exclusive-no-nodes", spec: `{"command":["true"],"exclusive":true}`, rejected: "spec.exclusive can only be set with spec.nodes"},
		{name: "duration-negative", spec: `{"command":["true"],"duration":"-5s"}`, rejected: "spec.duration must not be negative"},
		{name: "workdir-relative", spec: `{"command":["true"],"workingDir":"tmp"}`, rejected: "spec.workingDir must be an absolute path"},
		{name: "command-empty", spec: `{"command":[]}`, rejected: "spec.command"},
		{name: "command-empty-program", spec: `{"command":["","x"]}`, rejected: "spec.command[0] (the program) must not be empty"},
		{name: "env-bad-name", spec: `{"command":["true"],"env":[{"name":"1-BAD","value":"x"}]}`, rejected: "spec.env[0].name"},
		{name: "unknown-field", spec: `{"command":["true"],"replicas":3}`, rejected: `unknown field "spec.replicas"`},
		{name: "jobspec-not-object", spec: `{"jobspec":"version: 1"}`, rejected: "spec.jobspec"},
		{name: "jobspec-huge", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"user":{"pad":"` + huge + `"}}}}`, rejected: "too large"},

		// Accepted by the API server; the controller or Flux refuses: Failed
		// with a reason, never submitted or retried for ever.
		{name: "jobspec-oversized", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"user":{"pad":"` + pad + `"}}}}`, failReason: fluxjobv1.ReasonJobspecTooLarge},
		{name: "jobspec-bad-duration", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"system":{"duration":"soon"}}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		// Flux's validator accepts empty resources and tasks, but the job
		// cannot run: refused by the controller, or an exec exception.
		{name: "jobspec-nothing-to-run", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"system":{"duration":0}}}}`, failReason: fluxjobv1.ReasonInvalidJobspec + "|" + fluxjobv1.ReasonException},
		{name: "jobspec-resources-string", spec: `{"jobspec":{"version":1,"resources":"lots","tasks":[{"command":["true"]}],"attributes":{"system":{}}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-system-not-object", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"system":5}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-user-not-object", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":{"user":"me"}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-version-2", spec: `{"jobspec":{"version":2,"resources":[],"tasks":[],"attributes":{}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-no-tasks", spec: `{"jobspec":{"version":1,"resources":[],"attributes":{}}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-attributes-array", spec: `{"jobspec":{"version":1,"resources":[],"tasks":[],"attributes":[]}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "jobspec-empty", spec: `{"jobspec":{}}`, failReason: fluxjobv1.ReasonInvalidJobspec},
		{name: "program-not-found", spec: `{"command":["/no/such/program"]}`, failReason: fluxjobv1.ReasonException},

		// Accepted; the controller neutralises the problem.
		// attributes.user.fluxjob names the owning FluxJob: the controller
		// overwrites a forged one (the schema cannot see into attributes).
		{name: "attributes-forged-owner", spec: `{"command":["true"],"attributes":{"fluxjob":{"uid":"forged","name":"other"}}}`, succeeds: true},
		// The job name is the controller's (exactly-once lookup relies on it).
		{name: "jobspec-forged-name", spec: `{"jobspec":{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
			`"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":0,"job":{"name":"fluxjob-someone-else"}}}}}`, succeeds: true},
	}
}

// createRaw creates a FluxJob from raw JSON with strict field validation,
// as kubectl does.
func (h *harness) createRaw(name, spec string) error {
	var m map[string]any
	if err := json.Unmarshal([]byte(spec), &m); err != nil {
		h.t.Fatalf("%s: the test's spec is not JSON: %v", name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": m}}
	u.SetGroupVersionKind(fluxjobv1.GroupVersion.WithKind("FluxJob"))
	u.SetNamespace(h.ns)
	u.SetName(name)
	return h.c.Create(context.Background(), u, client.FieldValidation("Strict"))
}

// TestFaultBadManifests sends hostile and mistaken FluxJobs through the
// real API server to a running controller: each is refused by the API
// with a message that names the problem, or ends Failed with a reason;
// the manager never crashes or panics, and every object can be deleted
// (no finalizer left behind).
func TestFaultBadManifests(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	_, panicsBefore := reconcileCount(t)
	h.start()
	cases := badManifests()
	var accepted []badManifest
	for _, tc := range cases {
		err := h.createRaw(tc.name, tc.spec)
		switch {
		case tc.rejected != "" && err == nil:
			t.Errorf("%s: accepted by the API server, want rejected with %q", tc.name, tc.rejected)
			accepted = append(accepted, tc)
		case tc.rejected != "" && !strings.Contains(err.Error(), tc.rejected):
			t.Errorf("%s: rejected with %q, want a message containing %q", tc.name, fluxjobv1.Clip(err.Error(), 400), tc.rejected)
		case tc.rejected != "" && !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) && !apierrors.IsRequestEntityTooLargeError(err):
			t.Errorf("%s: rejected with %v (%T), want Invalid, BadRequest or RequestEntityTooLarge", tc.name, fluxjobv1.Clip(err.Error(), 200), err)
		case tc.failReason != "" && err != nil:
			t.Errorf("%s: rejected by the API server (%v), want accepted and Failed with %s", tc.name, fluxjobv1.Clip(err.Error(), 400), tc.failReason)
		case tc.failReason != "" || tc.succeeds:
			if err != nil {
				t.Errorf("%s: rejected by the API server (%v), want accepted and run", tc.name, fluxjobv1.Clip(err.Error(), 400))
				continue
			}
			accepted = append(accepted, tc)
		}
	}
	for _, tc := range accepted {
		obj := h.waitFor(tc.name, 30*time.Second, "a final phase", terminal)
		if tc.succeeds {
			if obj.Status.Phase != fluxjobv1.PhaseSucceeded {
				t.Errorf("%s: ended %s (%s), want Succeeded", tc.name, obj.Status.Phase, obj.Status.Message)
			}
			if ids := h.brokerJobsByName()[jobspec.Name(obj)]; len(ids) != 1 || int64(ids[0]) != obj.Status.JobID {
				t.Errorf("%s: the broker's jobs named %s are %v, want only %d", tc.name, jobspec.Name(obj), ids, obj.Status.JobID)
			}
			continue
		}
		if tc.failReason == "" {
			t.Errorf("%s: accepted and ended %s (%s)", tc.name, obj.Status.Phase, obj.Status.Message)
			continue
		}
		if obj.Status.Phase != fluxjobv1.PhaseFailed {
			t.Errorf("%s: ended %s (%s), want Failed with %s", tc.name, obj.Status.Phase, obj.Status.Message, tc.failReason)
			continue
		}
		if c := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionFailed); c == nil || c.Status != metav1.ConditionTrue || !slices.Contains(strings.Split(tc.failReason, "|"), c.Reason) {
			t.Errorf("%s: Failed condition %v, want True/%s (message %q)", tc.name, c, tc.failReason, obj.Status.Message)
			continue
		}
		if obj.Status.Message == "" {
			t.Errorf("%s: Failed without a message", tc.name)
		}
		t.Logf("%s: Failed/%s: %s", tc.name, tc.failReason, fluxjobv1.Clip(obj.Status.Message, 160))
	}
	// Every accepted object can be deleted: no stuck finalizer.
	for _, tc := range accepted {
		obj, err := h.get(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.c.Delete(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range accepted {
		h.waitGone(tc.name, 20*time.Second)
	}
	// The controller still works, and nothing panicked.
	h.create("after", cmdSpec("true"))
	h.waitPhase("after", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if _, panics := reconcileCount(t); panics != panicsBefore {
		t.Fatalf("%.0f reconcile panics", panics-panicsBefore)
	}
	select {
	case err := <-h.done:
		t.Fatalf("the manager stopped: %v", err)
	default:
	}
}

// TestFaultSpecChangeAfterSubmission edits a submitted FluxJob's spec:
// everything but urgency is refused by the API server, with a message
// saying the spec is immutable; the Flux job is unaffected.
func TestFaultSpecChangeAfterSubmission(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.broker.PauseScheduling(true)
	h.start()
	h.create("edit", fluxjobv1.FluxJobSpec{Command: []string{"sleep", "1"}, Tasks: ptrTo(int32(1))})
	h.waitFor("edit", 30*time.Second, "Submitted", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseSubmitted })
	edits := []struct {
		name   string
		patch  string
		reason string
	}{
		{"command", `{"spec":{"command":["false"]}}`, "spec.command is immutable"},
		{"tasks", `{"spec":{"tasks":2}}`, "spec.tasks is immutable"},
		{"add-env", `{"spec":{"env":[{"name":"A","value":"b"}]}}`, "spec is immutable except spec.urgency"},
		{"remove-tasks", `{"spec":{"tasks":null}}`, "spec is immutable except spec.urgency"},
		{"to-jobspec", `{"spec":{"command":null,"jobspec":` + validJobspec + `}}`, "spec is immutable except spec.urgency"},
	}
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			obj, err := h.get("edit")
			if err != nil {
				t.Fatal(err)
			}
			err = h.c.Patch(context.Background(), obj, client.RawPatch("application/merge-patch+json", []byte(e.patch)))
			if err == nil {
				t.Fatalf("the API server accepted the edit %s", e.patch)
			}
			if !strings.Contains(err.Error(), e.reason) {
				t.Fatalf("edit refused with %q, want a message containing %q", fluxjobv1.Clip(err.Error(), 400), e.reason)
			}
		})
	}
	h.broker.PauseScheduling(false)
	obj := h.waitPhase("edit", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if obj.Generation != 1 {
		t.Fatalf("generation %d after refused edits, want 1", obj.Generation)
	}
	if n := len(h.broker.Jobs()); n != 1 {
		t.Fatalf("the broker has %d jobs, want 1", n)
	}
}
