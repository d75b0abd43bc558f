package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// plans decides the test broker's outcome per program: the program's
// n-th run gets its plan's n-th outcome, later runs succeed; other
// programs get testbroker.DefaultOutcome. Each attempt is one run.
type plans struct {
	mu    sync.Mutex
	runs  map[string]int
	plans map[string][]testbroker.Outcome
}

func newPlans(p map[string][]testbroker.Outcome) *plans {
	return &plans{runs: map[string]int{}, plans: p}
}

func (p *plans) outcome(cmd []string) testbroker.Outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(cmd) == 0 {
		return testbroker.DefaultOutcome(cmd)
	}
	plan, ok := p.plans[cmd[0]]
	if !ok {
		return testbroker.DefaultOutcome(cmd)
	}
	n := p.runs[cmd[0]]
	p.runs[cmd[0]]++
	if n < len(plan) {
		return plan[n]
	}
	return testbroker.Outcome{}
}

func retrySpec(limit int32, policy *fluxjobv1.FailurePolicy, cmd ...string) fluxjobv1.FluxJobSpec {
	s := cmdSpec(cmd...)
	s.BackoffLimit = &limit
	s.FailurePolicy = policy
	return s
}

// brokerNames returns the names of the broker's jobs, sorted.
func (h *harness) brokerNames() []string {
	h.t.Helper()
	conn, ctx := brokerClient(h.t, h)
	var names []string
	for _, id := range h.broker.Jobs() {
		info, err := job.ListID(ctx, conn, id, "name")
		if err != nil {
			h.t.Fatal(err)
		}
		names = append(names, info.Name)
	}
	sort.Strings(names)
	return names
}

// namesOf returns the names of obj's attempts 0..n-1, sorted.
func namesOf(obj *fluxjobv1.FluxJob, n int) []string {
	var names []string
	for k := range n {
		names = append(names, jobspec.IndexName(obj, -1, k))
	}
	sort.Strings(names)
	return names
}

// checkHistory checks status.retry against the attempts wanted, each
// "result/reason/action/rule" with its exit code and exception type, and
// that each attempt had a job of its own.
func checkHistory(t *testing.T, obj *fluxjobv1.FluxJob, want ...string) {
	t.Helper()
	rs := obj.Status.Retry
	if rs == nil {
		t.Fatalf("no status.retry")
	}
	var got []string
	seen := map[string]bool{}
	for i, a := range rs.History {
		if a.Attempt != int32(i) {
			t.Errorf("history[%d] is attempt %d", i, a.Attempt)
		}
		if a.JobID == "" || seen[a.JobID] {
			t.Errorf("history[%d] job ID %q: missing or repeated", i, a.JobID)
		}
		seen[a.JobID] = true
		if a.CompletionTime == nil {
			t.Errorf("history[%d] has no completion time", i)
		}
		s := fmt.Sprintf("%s/%s/%s", a.Result, a.Reason, a.Action)
		if a.Rule != nil {
			s += fmt.Sprintf("/rule%d", *a.Rule)
		}
		if a.ExitCode != nil {
			s += fmt.Sprintf(" exit=%d", *a.ExitCode)
		}
		if a.Exception != nil {
			s += fmt.Sprintf(" exc=%s/%d", a.Exception.Type, a.Exception.Severity)
		}
		got = append(got, s)
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("history:\n got %q\nwant %q", got, want)
	}
}

// TestEnvtestRetryBackoffLimit: a job that always exits 3 runs
// backoffLimit+1 times, each attempt a Flux job of its own name, and the
// FluxJob fails BackoffLimitExceeded with every attempt in its history.
func TestEnvtestRetryBackoffLimit(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	counted := counterValue("fluxjob_failed_attempts_total", "action", "Retry")
	h.create("always", retrySpec(2, nil, "exit", "3"))
	obj := h.waitPhase("always", fluxjobv1.PhaseFailed, 60*time.Second)
	if n := counterValue("fluxjob_failed_attempts_total", "action", "Retry") - counted; n != 3 {
		t.Errorf("fluxjob_failed_attempts_total{action=Retry} grew by %v, want 3", n)
	}
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonBackoffLimitExceeded)
	rs := obj.Status.Retry
	if rs.Attempt != 2 || rs.Failed != 3 || rs.Ignored != 0 {
		t.Errorf("retry status attempt %d failed %d ignored %d, want 2 3 0", rs.Attempt, rs.Failed, rs.Ignored)
	}
	a := "FAILED/NonZeroExit/Retry exit=3"
	checkHistory(t, obj, a, a, a)
	if last := rs.History[2].JobID; last != obj.Status.JobIDF58 {
		t.Errorf("status.jobIDF58 %s, want the last attempt's %s", obj.Status.JobIDF58, last)
	}
	if got, want := h.brokerNames(), namesOf(obj, 3); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("broker jobs %v, want %v", got, want)
	}
	if obj.Status.ExitStatus == nil || *obj.Status.ExitStatus != 3 {
		t.Errorf("exitStatus %v, want 3", obj.Status.ExitStatus)
	}
	h.waitEvent("always", fluxjobv1.ReasonRetrying, 10*time.Second)
	h.waitEvent("always", fluxjobv1.ReasonBackoffLimitExceeded, 10*time.Second)
}

// TestEnvtestRetryThenSucceeds: two failures, then success within the
// limit: Succeeded, with the two failed attempts in the history.
func TestEnvtestRetryThenSucceeds(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"flaky": {{Status: 1 << 8}, {Status: (128 + 9) << 8}}})
	h := newHarness(t, testbroker.Options{Outcome: p.outcome}, Options{})
	h.start()
	h.create("flaky", retrySpec(5, nil, "flaky"))
	obj := h.waitPhase("flaky", fluxjobv1.PhaseSucceeded, 60*time.Second)
	if rs := obj.Status.Retry; rs.Attempt != 2 || rs.Failed != 2 {
		t.Errorf("retry status %+v, want attempt 2, failed 2", rs)
	}
	checkHistory(t, obj, "FAILED/NonZeroExit/Retry exit=1", "FAILED/NonZeroExit/Retry exit=137")
	if got, want := h.brokerNames(), namesOf(obj, 3); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("broker jobs %v, want %v", got, want)
	}
	requireCondition(t, obj, fluxjobv1.ConditionSucceeded, metav1.ConditionTrue, fluxjobv1.ReasonCompleted)
}

// TestEnvtestNoPolicyUnchanged: without backoffLimit and failurePolicy a
// failure is final at once and the status has no retry section.
func TestEnvtestNoPolicyUnchanged(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("plain", cmdSpec("false"))
	obj := h.waitPhase("plain", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonNonZeroExit)
	if obj.Status.Retry != nil || len(h.broker.Jobs()) != 1 {
		t.Errorf("retry status %+v, %d broker jobs: want none and 1", obj.Status.Retry, len(h.broker.Jobs()))
	}
}

// TestEnvtestFailurePolicyRules drives each rule kind and action through
// the test broker, whose endings match flux-core's (test/realflux
// TestFailureEndings).
func TestEnvtestFailurePolicyRules(t *testing.T) {
	long := testbroker.Outcome{Run: time.Hour}
	p := newPlans(map[string][]testbroker.Outcome{
		"timeout-twice": {long, long},
		"cancelled":     {long},
		"cancel-retry":  {long},
		"warned":        {long},
	})
	h := newHarness(t, testbroker.Options{Outcome: p.outcome, TimeScale: 0.01}, Options{})
	h.start()
	sev2 := int32(2)
	rules := func(r ...fluxjobv1.FailurePolicyRule) *fluxjobv1.FailurePolicy {
		return &fluxjobv1.FailurePolicy{Rules: r}
	}
	codes := func(a fluxjobv1.FailurePolicyAction, op fluxjobv1.ExitCodeOperator, v ...int32) fluxjobv1.FailurePolicyRule {
		return fluxjobv1.FailurePolicyRule{Action: a, OnExitCodes: &fluxjobv1.FailurePolicyOnExitCodes{Operator: op, Values: v}}
	}
	excs := func(a fluxjobv1.FailurePolicyAction, m fluxjobv1.FailurePolicyOnException) fluxjobv1.FailurePolicyRule {
		return fluxjobv1.FailurePolicyRule{Action: a, OnExceptions: []fluxjobv1.FailurePolicyOnException{m}}
	}
	withDuration := func(s fluxjobv1.FluxJobSpec, d time.Duration) fluxjobv1.FluxJobSpec {
		s.Duration = &metav1.Duration{Duration: d}
		return s
	}
	cases := []struct {
		name  string
		spec  fluxjobv1.FluxJobSpec
		act   func(t *testing.T, id job.ID) // on the first attempt, once it runs
		phase fluxjobv1.FluxJobPhase
		// reason of the Failed condition (final phase Failed/Cancelled)
		reason  string
		history []string
	}{
		{name: "failjob-on-exit-code", spec: retrySpec(5, rules(codes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 3)), "exit", "3"),
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonFailurePolicy, history: []string{"FAILED/NonZeroExit/FailJob/rule0 exit=3"}},
		{name: "failindex-not-in", spec: retrySpec(5, rules(codes(fluxjobv1.ActionFailIndex, fluxjobv1.ExitCodeNotIn, 0, 1)), "kill-self", "9"),
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonFailurePolicy, history: []string{"FAILED/NonZeroExit/FailIndex/rule0 exit=137"}},
		{name: "ignore-timeouts", spec: withDuration(retrySpec(0, rules(excs(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "timeout"})), "timeout-twice"), time.Second),
			phase: fluxjobv1.PhaseSucceeded, history: []string{
				"TIMEOUT/Exception/Ignore/rule0 exit=142 exc=timeout/0", "TIMEOUT/Exception/Ignore/rule0 exit=142 exc=timeout/0"}},
		{name: "retry-exec-failure", spec: retrySpec(1, rules(excs(fluxjobv1.ActionRetry, fluxjobv1.FailurePolicyOnException{Type: "exec", NoteContains: "start failed"})), "no-such-program"),
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonBackoffLimitExceeded, history: []string{
				"FAILED/Exception/Retry/rule0 exit=127 exc=exec/0", "FAILED/Exception/Retry/rule0 exit=127 exc=exec/0"}},
		{name: "failjob-any-exception", spec: retrySpec(3, rules(excs(fluxjobv1.ActionFailJob, fluxjobv1.FailurePolicyOnException{})), "no-such-program"),
			phase: fluxjobv1.PhaseFailed, reason: fluxjobv1.ReasonFailurePolicy, history: []string{"FAILED/Exception/FailJob/rule0 exit=127 exc=exec/0"}},
		{name: "cancelled", spec: retrySpec(3, nil, "cancelled"), act: func(t *testing.T, id job.ID) { h.cancelAtBroker(t, id) },
			phase: fluxjobv1.PhaseCancelled, reason: fluxjobv1.ReasonCancelled, history: []string{"CANCELED/Cancelled/ exit=143 exc=cancel/0"}},
		{name: "cancel-retry", spec: retrySpec(1, rules(excs(fluxjobv1.ActionRetry, fluxjobv1.FailurePolicyOnException{Type: "cancel"})), "cancel-retry"),
			act:   func(t *testing.T, id job.ID) { h.cancelAtBroker(t, id) },
			phase: fluxjobv1.PhaseSucceeded, history: []string{"CANCELED/Cancelled/Retry/rule0 exit=143 exc=cancel/0"}},
		{name: "non-fatal-severity", spec: retrySpec(0, rules(excs(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "node-failure", MaxSeverity: &sev2})), "warned"),
			act: func(t *testing.T, id job.ID) {
				conn, ctx := brokerClient(t, h)
				if err := job.Raise(ctx, conn, id, "node-failure", 2, "lost vm (rank 1)"); err != nil {
					t.Fatal(err)
				}
				if err := job.Kill(ctx, conn, id, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			},
			phase: fluxjobv1.PhaseSucceeded, history: []string{"FAILED/NonZeroExit/Ignore/rule0 exit=143 exc=node-failure/2"}},
	}
	for _, tc := range cases {
		h.create(tc.name, tc.spec)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.act != nil {
				obj := h.waitPhase(tc.name, fluxjobv1.PhaseRunning, 30*time.Second)
				tc.act(t, job.ID(obj.Status.JobID))
			}
			obj := h.waitPhase(tc.name, tc.phase, 60*time.Second)
			if tc.reason != "" {
				requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, tc.reason)
			}
			checkHistory(t, obj, tc.history...)
			attempts := len(tc.history)
			if tc.phase == fluxjobv1.PhaseSucceeded {
				attempts++
			}
			if int(obj.Status.Retry.Attempt) != attempts-1 {
				t.Errorf("attempt %d, want %d", obj.Status.Retry.Attempt, attempts-1)
			}
		})
	}
	// Each FluxJob's attempts, and nothing else, reached the broker.
	var want []string
	for _, tc := range cases {
		obj, err := h.get(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, namesOf(obj, int(obj.Status.Retry.Attempt)+1)...)
	}
	sort.Strings(want)
	if got := h.brokerNames(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("broker jobs\n %v\nwant\n %v", got, want)
	}
}

// cancelAtBroker cancels a job as flux cancel does.
func (h *harness) cancelAtBroker(t *testing.T, id job.ID) {
	t.Helper()
	conn, ctx := brokerClient(t, h)
	if err := job.Cancel(ctx, conn, id, ""); err != nil {
		t.Fatal(err)
	}
}

// setAttempt writes the status a manager that decided a retry leaves:
// attempt 1 current, attempt 0 (Flux job prev) in the history.
func (h *harness) setAttempt(obj *fluxjobv1.FluxJob, prev job.ID) {
	h.t.Helper()
	base := obj.DeepCopy()
	obj.Status.Phase = fluxjobv1.PhasePending
	obj.Status.Retry = &fluxjobv1.FluxJobRetryStatus{Attempt: 1, Failed: 1, History: []fluxjobv1.FluxJobAttempt{
		{Attempt: 0, JobID: prev.F58(), Result: "FAILED", Reason: fluxjobv1.ReasonNonZeroExit, Action: fluxjobv1.ActionRetry},
	}}
	if err := h.c.Status().Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		h.t.Fatal(err)
	}
}

// markAttempt writes the marker annotation of attempt n at time at.
func (h *harness) markAttempt(obj *fluxjobv1.FluxJob, n int32, at time.Time) {
	h.t.Helper()
	base := obj.DeepCopy()
	m := submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(at), Instance: "default", After: h.maxJobID(), Attempt: n}
	if err := m.setOn(obj); err != nil {
		h.t.Fatal(err)
	}
	if err := h.c.Patch(context.Background(), obj, client.MergeFrom(base)); err != nil {
		h.t.Fatal(err)
	}
}

// TestEnvtestRetryCrashAfterSubmit: a manager decided a retry, wrote the
// marker of attempt 1, submitted it and died before the job ID reached
// the status. The next manager adopts that job by its attempt's name and
// submits nothing.
func TestEnvtestRetryCrashAfterSubmit(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	obj := h.create("crash", retrySpec(2, nil, "true"))
	prev := submitDirect(t, h.broker.URI(), mustBuild(t, obj, 0)) // attempt 0's job
	h.setAttempt(obj, prev)
	h.markAttempt(obj, 1, time.Now())
	id := submitDirect(t, h.broker.URI(), mustBuild(t, obj, 1))
	h.start()
	obj = h.waitPhase("crash", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if job.ID(obj.Status.JobID) != id {
		t.Fatalf("status job %s, want the adopted %s", job.ID(obj.Status.JobID), id)
	}
	if n := len(h.broker.Jobs()); n != 2 {
		t.Fatalf("broker has %d jobs, want 2 (attempt 1 submitted twice?)", n)
	}
	h.waitEvent("crash", "Adopted", 10*time.Second)
}

// TestEnvtestRetryCrashBeforeMarker: a manager decided a retry (the status
// says attempt 1) and died before the marker of attempt 1: the marker
// annotation is attempt 0's. Nothing of attempt 1 was submitted, so the
// next manager submits it at once, without the lookup and adopt window a
// marker of attempt 1 would need (one hour here: the test would time out).
func TestEnvtestRetryCrashBeforeMarker(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Hour})
	obj := h.create("decided", retrySpec(2, nil, "true"))
	h.markAttempt(obj, 0, time.Now())
	prev := submitDirect(t, h.broker.URI(), mustBuild(t, obj, 0))
	h.setAttempt(obj, prev)
	h.start()
	obj = h.waitPhase("decided", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if got, want := h.brokerNames(), namesOf(obj, 2); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("broker jobs %v, want %v", got, want)
	}
	if job.ID(obj.Status.JobID) == prev || obj.Status.Retry.Attempt != 1 {
		t.Errorf("status job %d attempt %d: want attempt 1's new job", obj.Status.JobID, obj.Status.Retry.Attempt)
	}
}

// TestEnvtestRetryRestart: the manager restarts while a retry runs; the
// new one follows attempt 1 and neither resubmits nor recounts.
func TestEnvtestRetryRestart(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"restarted": {{Status: 1 << 8}, {Run: 3 * time.Second}}})
	h := newHarness(t, testbroker.Options{Outcome: p.outcome}, Options{})
	h.start()
	h.create("restarted", retrySpec(3, nil, "restarted"))
	h.waitFor("restarted", 30*time.Second, "attempt 1 running", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Retry != nil && o.Status.Retry.Attempt == 1 && o.Status.Phase == fluxjobv1.PhaseRunning
	})
	h.stop()
	h.start()
	obj := h.waitPhase("restarted", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if rs := obj.Status.Retry; rs.Attempt != 1 || rs.Failed != 1 {
		t.Errorf("retry status %+v, want attempt 1 failed 1", rs)
	}
	checkHistory(t, obj, "FAILED/NonZeroExit/Retry exit=1")
	if got, want := h.brokerNames(), namesOf(obj, 2); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("broker jobs %v, want %v", got, want)
	}
}

// TestEnvtestRetryDeleteCancelsCurrentAttempt: deleting a FluxJob cancels
// its current attempt's job (found by the attempt's name).
func TestEnvtestRetryDeleteCancelsCurrentAttempt(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"second": {{Status: 1 << 8}, {Run: time.Hour}}})
	h := newHarness(t, testbroker.Options{Outcome: p.outcome}, Options{})
	h.start()
	h.create("second", retrySpec(3, nil, "second"))
	obj := h.waitFor("second", 30*time.Second, "attempt 1 running", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Retry != nil && o.Status.Retry.Attempt == 1 && o.Status.Phase == fluxjobv1.PhaseRunning
	})
	id := job.ID(obj.Status.JobID)
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("second", 20*time.Second)
	cancelled := false
	for _, ev := range h.brokerEvents(id) {
		cancelled = cancelled || ev.Name == "exception" && ev.Context["type"] == "cancel"
	}
	if !cancelled {
		t.Fatalf("attempt 1's Flux job %s not cancelled: %v", id, h.brokerEvents(id))
	}
}

func mustBuild(t *testing.T, obj *fluxjobv1.FluxJob, attempt int) []byte {
	t.Helper()
	spec, fail := jobspec.BuildNamed(obj, jobspec.IndexName(obj, -1, attempt))
	if fail != nil {
		t.Fatal(fail.Message)
	}
	return spec
}

// TestEnvtestDependencyOnRetryingFluxJob: B runs afterok A, and A fails
// once, then succeeds as attempt 1. B waits for A to end and depends on
// the job that ended it; naming attempt 0's job (failed) would make Flux
// fail B's dependency.
func TestEnvtestDependencyOnRetryingFluxJob(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"upstream": {{Run: 3 * time.Second, Status: 1 << 8}}})
	h := newHarness(t, testbroker.Options{Outcome: p.outcome}, Options{})
	h.start()
	b := cmdSpec("true")
	b.DependsOn = []fluxjobv1.Dependency{{Name: "a"}}
	h.create("b", b)
	h.create("a", retrySpec(1, nil, "upstream"))
	// a's first job is in its status, and b sees it
	h.waitFor("a", 30*time.Second, "attempt 0 running", func(o *fluxjobv1.FluxJob) bool { return o.Status.Phase == fluxjobv1.PhaseRunning })
	a := h.waitPhase("a", fluxjobv1.PhaseSucceeded, 30*time.Second)
	obj := h.waitPhase("b", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if a.Status.Retry.Attempt != 1 {
		t.Fatalf("a ended at attempt %d, want 1", a.Status.Retry.Attempt)
	}
	if deps := obj.Status.Conditions; meta.FindStatusCondition(deps, fluxjobv1.ConditionDependenciesReady) == nil {
		t.Errorf("b has no DependenciesReady condition: %v", conditionSummary(obj))
	}
	if len(h.broker.Jobs()) != 3 {
		t.Fatalf("broker jobs %v, want a's two attempts and b", h.brokerNames())
	}
}
