package controllers

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// TestFinishedCondition: Finished is True with the ending's reason for
// every final phase, False before; a terminal status written before the
// condition existed gains it from its Failed or Succeeded condition.
func TestFinishedCondition(t *testing.T) {
	now := floatTime(t0).Add(time.Hour)
	id := job.ID(1234)
	tests := []struct {
		name  string
		evs   []job.Event
		phase fluxjobv1.FluxJobPhase
		want  string
	}{
		{"running", lifecycle("start"), fluxjobv1.PhaseRunning, "False/InProgress"},
		{"succeeded", withEvents(lifecycle("start"), ev("finish", 2, map[string]any{"status": 0.0})), fluxjobv1.PhaseSucceeded, "True/Completed"},
		{"failed", withEvents(lifecycle("start"), ev("finish", 2, map[string]any{"status": 256.0})), fluxjobv1.PhaseFailed, "True/NonZeroExit"},
		{"cancelled", withEvents(lifecycle("priority"), ev("exception", 1, map[string]any{"type": "cancel", "severity": 0.0}), ev("clean", 1.1, nil)),
			fluxjobv1.PhaseCancelled, "True/Cancelled"},
		{"dependency", withEvents(lifecycle("validate"), ev("exception", 1, map[string]any{"type": "dependency", "severity": 0.0,
			"note": "dependency after-success=ƒ1 can never be satisfied"}), ev("clean", 1.1, nil)), fluxjobv1.PhaseFailed, "True/DependencyFailed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := &broker.View{HasJobID: true, JobID: uint64(id), Events: tc.evs}
			st := computeStatus(newObj(), statusInput{Obs: obs}, now)
			if st.Phase != tc.phase || cond(st, fluxjobv1.ConditionFinished) != tc.want {
				t.Fatalf("phase %s Finished %s, want %s %s", st.Phase, cond(st, fluxjobv1.ConditionFinished), tc.phase, tc.want)
			}
		})
	}
	old := newObj()
	old.Status = fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhaseFailed, Message: "m", Conditions: []metav1.Condition{
		{Type: fluxjobv1.ConditionFailed, Status: metav1.ConditionTrue, Reason: fluxjobv1.ReasonNonZeroExit, LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))},
	}}
	st := computeStatus(old, statusInput{}, now)
	if got := cond(st, fluxjobv1.ConditionFinished); got != "True/NonZeroExit" {
		t.Fatalf("old terminal status: Finished %s", got)
	}
	// Computing it again changes nothing: no write loop.
	old.Status = st
	if significantChange(st, computeStatus(old, statusInput{}, now.Add(time.Hour))) {
		t.Fatal("a finished status changes on every computation")
	}
}

// TestSuspendStatus: phase and conditions of a suspended FluxJob before
// submission, held after submission, and started.
func TestSuspendStatus(t *testing.T) {
	now := floatTime(t0)
	tests := []struct {
		name      string
		obs       *broker.View
		hold      *hold
		phase     fluxjobv1.FluxJobPhase
		suspended string
	}{
		{"not submitted", nil, suspendHold(), fluxjobv1.PhaseSuspended, "True/Suspended"},
		{"held", &broker.View{HasJobID: true, JobID: 7, Events: lifecycle("priority")}, nil, fluxjobv1.PhaseSuspended, "True/Suspended"},
		{"started", &broker.View{HasJobID: true, JobID: 7, Events: lifecycle("start")}, nil, fluxjobv1.PhaseRunning, "False/AlreadyStarted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := newObj()
			obj.Spec.Suspend = true
			st := computeStatus(obj, statusInput{Obs: tc.obs, Hold: tc.hold}, now)
			if st.Phase != tc.phase || cond(st, fluxjobv1.ConditionSuspended) != tc.suspended {
				t.Fatalf("phase %s Suspended %s, want %s %s", st.Phase, cond(st, fluxjobv1.ConditionSuspended), tc.phase, tc.suspended)
			}
			// Resumed: the phase goes back, the condition goes away.
			obj.Status = st
			obj.Spec.Suspend = false
			st = computeStatus(obj, statusInput{Obs: tc.obs}, now)
			if st.Phase == fluxjobv1.PhaseSuspended || cond(st, fluxjobv1.ConditionSuspended) != "absent" {
				t.Fatalf("after resume: phase %s Suspended %s", st.Phase, cond(st, fluxjobv1.ConditionSuspended))
			}
		})
	}
}

// TestRejection sorts the broker's submission refusals into reasons.
func TestRejection(t *testing.T) {
	tests := []struct{ msg, reason string }{
		{"'batch' is not a valid queue", fluxjobv1.ReasonQueueRejected},
		{"Invalid queue 'x' specified", fluxjobv1.ReasonQueueRejected},
		{"no queue specified", fluxjobv1.ReasonQueueRejected},
		{"job submission to debug is disabled: maintenance", fluxjobv1.ReasonQueueRejected},
		{"dependency: afterok: job ƒ2 failed or was canceled", fluxjobv1.ReasonDependencyFailed},
		{"dependency scheme \"x\" not supported", fluxjobv1.ReasonDependencyFailed},
		{"afterok: Permission denied for job ƒ2", fluxjobv1.ReasonDependencyFailed},
		{"Invalid begin-time=soon", fluxjobv1.ReasonDependencyFailed},
		{"attributes.system.duration must be a number", fluxjobv1.ReasonInvalidJobspec},
		{"only instance owner can use sign-type=none", fluxjobv1.ReasonSubmitFailed},
	}
	for _, tc := range tests {
		if r, _ := broker.Rejection(tc.msg); r != tc.reason {
			t.Errorf("%q: reason %s, want %s", tc.msg, r, tc.reason)
		}
	}
}

// TestBuildJobspecBatch: queue and dependencies land where flux submit
// puts them, in command and jobspec mode.
func TestBuildJobspecBatch(t *testing.T) {
	begin := metav1.NewTime(time.Unix(1764331200, 0))
	deps := []job.Dependency{{Scheme: "afterok", Value: "ƒ2"}}
	raw := `{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],` +
		`"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],` +
		`"attributes":{"system":{"duration":0,"dependencies":[{"scheme":"afterany","value":"ƒ9"}]}}}`
	tests := []struct {
		name  string
		spec  fluxjobv1.FluxJobSpec
		queue string
		want  []job.Dependency
	}{
		{"command", fluxjobv1.FluxJobSpec{Command: []string{"true"}, Queue: "batch", BeginTime: &begin}, "batch",
			append(deps, job.Dependency{Scheme: "begin-time", Value: "1764331200.0"})},
		{"jobspec", fluxjobv1.FluxJobSpec{Jobspec: &runtime.RawExtension{Raw: []byte(raw)}}, "",
			append([]job.Dependency{{Scheme: "afterany", Value: "ƒ9"}}, deps...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := specObj(tc.spec)
			b, fail := jobspec.Build(obj, append(deps, jobspec.BeginTime(obj)...)...)
			if fail != nil {
				t.Fatal(fail.Message)
			}
			js, err := job.Parse(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			got, _ := json.Marshal(js.Attributes.System.Dependencies)
			want, _ := json.Marshal(tc.want)
			if js.Attributes.System.Queue != tc.queue || string(got) != string(want) {
				t.Fatalf("queue %q dependencies %s, want %q %s", js.Attributes.System.Queue, got, tc.queue, want)
			}
		})
	}
	if jobspec.Scheme("") != "afterok" || jobspec.Scheme(fluxjobv1.DependAfter) != "afterstart" || jobspec.Scheme(fluxjobv1.DependAfterNotOK) != "afternotok" {
		t.Fatal("fluxScheme")
	}
}

// TestEnvtestGuestRefused backs the README's guest paragraph: a manager
// that is a guest of the Flux instance (not its owner) submits jobspecs
// signed with mechanism "none", which flux-core 0.88's job-ingest refuses
// from anyone but the owner (src/modules/job-ingest/job.c: "only instance
// owner can use sign-type=none", EPERM). The FluxJob ends Failed with the
// broker's message; nothing runs.
func TestEnvtestGuestRefused(t *testing.T) {
	other := uint32(os.Getuid()) + 4242
	h := newHarness(t, testbroker.Options{OwnerUID: &other, AllowGuests: true}, Options{})
	h.start()
	h.create("guest", cmdSpec("true"))
	obj := h.waitPhase("guest", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonSubmitFailed)
	if !strings.Contains(obj.Status.Message, "only instance owner can use sign-type=none") || len(h.broker.Jobs()) != 0 {
		t.Fatalf("message %q, broker jobs %v", obj.Status.Message, h.broker.Jobs())
	}
}

// TestEnvtestWritesPerJobUnchanged: FluxJobs that use none of the batch
// options cost what they did before them. Every status write of such a
// job changes its phase (the batch conditions, Finished included, ride
// along with those writes and never cause one), and a non-final status
// waits out statusPace after the controller's last write (pace.go), so a
// job whose Flux job ends within statusPace of its submission marker gets
// exactly one status write, the final one; and every job exactly 1
// object write (the marker with the finalizer). The benchmark row
// (BenchmarkControllerEndToEnd1000) measures the average.
func TestEnvtestWritesPerJobUnchanged(t *testing.T) {
	const n = 20
	h := newHarness(t, testbroker.Options{}, Options{MaxConcurrentReconciles: 4})
	h.start()
	for i := range n {
		h.create(fmt.Sprintf("plain-%d", i), cmdSpec("true"))
	}
	rank := map[string]int{"Pending": 0, "Submitted": 1, "Running": 2, "Succeeded": 3}
	status, object := 0, 0
	for i := range n {
		name := fmt.Sprintf("plain-%d", i)
		obj := h.waitPhase(name, fluxjobv1.PhaseSucceeded, 60*time.Second)
		requireCondition(t, obj, fluxjobv1.ConditionFinished, metav1.ConditionTrue, fluxjobv1.ReasonCompleted)
		// The object can be read back before the counting client has
		// recorded the write that made it Succeeded.
		s, o, phases := h.counts.writesAfter(name, fluxjobv1.PhaseSucceeded, 10*time.Second)
		status, object = status+s, object+o
		if len(phases) == 0 || phases[len(phases)-1] != "Succeeded" {
			t.Errorf("%s: status writes with phases %v, want Succeeded last", name, phases)
		}
		if ended := markerToClean(t, obj); ended < statusPace-200*time.Millisecond && len(phases) != 1 {
			t.Errorf("%s: its Flux job ended %s after the marker, within statusPace (%s), yet %d status writes (phases %v), want 1",
				name, ended, statusPace, len(phases), phases)
		}
		for j := 1; j < len(phases); j++ {
			if r, ok := rank[phases[j]]; !ok || r <= rank[phases[j-1]] {
				t.Errorf("%s: status writes with phases %v: a write that does not move the phase forward", name, phases)
			}
		}
		if o != 1 {
			t.Errorf("%s: %d object writes, want 1 (the marker with the finalizer)", name, o)
		}
	}
	t.Logf("%d zero-runtime FluxJobs: %.2f status writes and %.2f object writes per job", n, float64(status)/n, float64(object)/n)
}

// markerToClean is how long after its submission marker obj's Flux job
// was cleaned up (its eventlog's clean event).
func markerToClean(t *testing.T, obj *fluxjobv1.FluxJob) time.Duration {
	t.Helper()
	m, ok := annotationMarker(obj)
	if !ok {
		t.Fatalf("%s: no submission marker (annotations %v)", obj.Name, obj.Annotations)
	}
	for _, ev := range obj.Status.Events {
		if ev.Name == "clean" {
			return ev.Time.Sub(m.At.Time)
		}
	}
	t.Fatalf("%s: no clean event in status.events", obj.Name)
	return 0
}
