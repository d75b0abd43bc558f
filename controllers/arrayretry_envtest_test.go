package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// retryArraySpec is an array whose index i runs the program p<i> (the
// plans decide each run's outcome), with backoffLimitPerIndex limit.
func retryArraySpec(indexes string, limit int32, fp *fluxjobv1.FailurePolicy) fluxjobv1.FluxJobSpec {
	s := arraySpec(indexes, "p{cc}")
	s.Array.BackoffLimitPerIndex = &limit
	s.FailurePolicy = fp
	return s
}

// indexOutcome is p's outcome of a run, where a program of an index not
// in the plans (p<i>, q<i>) succeeds.
func indexOutcome(p *plans) func([]string) testbroker.Outcome {
	return func(cmd []string) testbroker.Outcome {
		p.mu.Lock()
		_, ok := p.plans[cmd[0]]
		p.mu.Unlock()
		if !ok && len(cmd) == 1 && (strings.HasPrefix(cmd[0], "p") || strings.HasPrefix(cmd[0], "q")) {
			return testbroker.Outcome{}
		}
		return p.outcome(cmd)
	}
}

// failing is n failed runs (exit code c).
func failing(n, c int) []testbroker.Outcome {
	out := make([]testbroker.Outcome, n)
	for i := range out {
		out[i] = testbroker.Outcome{Status: c << 8}
	}
	return out
}

// checkAttempts asserts that the broker holds exactly one job of each
// attempt named in want (index -> attempts it ran) and no other job of
// obj: no attempt was submitted twice.
func (h *harness) checkAttempts(obj *fluxjobv1.FluxJob, want map[int]int) {
	h.t.Helper()
	byName := h.brokerJobsByName()
	var wantNames []string
	for i, n := range want {
		for k := range n {
			wantNames = append(wantNames, jobspec.IndexName(obj, i, k))
		}
	}
	var got []string
	for name, ids := range byName {
		if strings.HasPrefix(name, jobspec.Name(obj)+"-") {
			got = append(got, name)
			if len(ids) != 1 {
				h.t.Errorf("%s submitted %d times: %v", name, len(ids), ids)
			}
		}
	}
	sort.Strings(got)
	sort.Strings(wantNames)
	if strings.Join(got, " ") != strings.Join(wantNames, " ") {
		h.t.Errorf("broker jobs:\n got %v\nwant %v", got, wantNames)
	}
}

// TestEnvtestArrayRetrySucceeds: index 1 fails twice and succeeds on
// attempt 2 (its third Flux job, fluxjob-<uid>-1.2); the array succeeds.
func TestEnvtestArrayRetrySucceeds(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"p1": failing(2, 1)})
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{})
	h.start()
	h.create("retry", retryArraySpec("0-3", 2, nil))
	obj := h.waitPhase("retry", fluxjobv1.PhaseSucceeded, 60*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionSucceeded, metav1.ConditionTrue, fluxjobv1.ReasonCompleted)
	if a := obj.Status.Array; a.Succeeded != 4 || a.Failed != 0 || a.Retries != 2 || a.SucceededIndexes != "0-3" {
		t.Errorf("status.array = %+v", a)
	}
	h.checkAttempts(obj, map[int]int{0: 1, 1: 3, 2: 1, 3: 1})
}

// TestEnvtestArrayIndexFailsAfterLimit: index 2 always fails: it runs
// backoffLimitPerIndex+1 times and is failed; the others succeed.
func TestEnvtestArrayIndexFailsAfterLimit(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{"p2": failing(10, 7)})
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{})
	h.start()
	h.create("limit", retryArraySpec("0-4", 1, nil))
	obj := h.waitPhase("limit", fluxjobv1.PhaseFailed, 60*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonIndexesFailed)
	if a := obj.Status.Array; a.Succeeded != 4 || a.Failed != 1 || a.FailedIndexes != "2" || a.SucceededIndexes != "0-1,3-4" || a.Retries != 1 {
		t.Errorf("status.array = %+v", a)
	}
	h.checkAttempts(obj, map[int]int{0: 1, 1: 1, 2: 2, 3: 1, 4: 1})
}

// TestEnvtestArrayMaxFailedIndexes: two indexes fail with
// maxFailedIndexes 1: the array fails MaxFailedIndexesExceeded, the
// running indexes are cancelled and no more are submitted.
func TestEnvtestArrayMaxFailedIndexes(t *testing.T) {
	long := testbroker.Outcome{Run: time.Hour}
	p := newPlans(map[string][]testbroker.Outcome{"p0": failing(1, 1), "p1": failing(1, 1),
		"p2": {long}, "p3": {long}, "p4": {long}, "p5": {long}, "p6": {long}, "p7": {long}})
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{})
	h.start()
	spec := retryArraySpec("0-7", 0, nil)
	one, four := int32(1), int32(4)
	spec.Array.MaxFailedIndexes, spec.Array.Parallelism = &one, &four
	h.create("maxfail", spec)
	obj := h.waitPhase("maxfail", fluxjobv1.PhaseFailed, 60*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonMaxFailedIndexesExceeded)
	requireCondition(t, obj, fluxjobv1.ConditionFailureTarget, metav1.ConditionTrue, fluxjobv1.ReasonMaxFailedIndexesExceeded)
	a := obj.Status.Array
	if a.Failed != 2 || a.FailedIndexes != "0-1" || a.Cancelled != 6 || a.Active != 0 || a.Succeeded != 0 {
		t.Errorf("status.array = %+v", a)
	}
	// Indexes 0-3 first; each failure frees a slot that index 4, then 5,
	// may take before the second failure ends the array; 6 and 7 never run.
	byName := h.brokerJobsByName()
	if len(byName) < 4 || len(byName) > 6 {
		t.Errorf("%d index jobs submitted, want 4 to 6", len(byName))
	}
	for i := range len(byName) {
		if ids := byName[jobspec.IndexName(obj, i, 0)]; len(ids) != 1 {
			t.Errorf("index %d: jobs %v", i, ids)
		}
	}
	for name, ids := range byName {
		evs := waitEnded(t, h, ids[0])
		if last := evs[len(evs)-1]; last.Name != job.EventClean {
			t.Errorf("%s did not end", name)
		}
	}
}

// TestEnvtestArrayFailurePolicy: per-index rules. FailIndex fails index 0
// at once although retries are left; Ignore retries index 1 without
// counting (backoffLimitPerIndex 0); an unmatched failure of index 2 is
// not retried (limit 0). In a second array, FailJob on index 1 fails the
// array and cancels the running indexes.
func TestEnvtestArrayFailurePolicy(t *testing.T) {
	long := testbroker.Outcome{Run: time.Hour}
	p := newPlans(map[string][]testbroker.Outcome{
		"p0": failing(3, 3), "p1": failing(2, 5), "p2": failing(1, 1),
		"q0": {long}, "q1": failing(1, 4), "q2": {long},
	})
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{})
	h.start()
	fp := policy(
		onCodes(fluxjobv1.ActionFailIndex, fluxjobv1.ExitCodeIn, 3),
		onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 5),
		onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 4),
	)
	h.create("rules", retryArraySpec("0-3", 0, fp))
	obj := h.waitPhase("rules", fluxjobv1.PhaseFailed, 60*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonIndexesFailed)
	if a := obj.Status.Array; a.FailedIndexes != "0,2" || a.SucceededIndexes != "1,3" || a.Retries != 2 {
		t.Errorf("status.array = %+v", a)
	}
	h.checkAttempts(obj, map[int]int{0: 1, 1: 3, 2: 1, 3: 1})

	spec := arraySpec("0-2", "q{cc}")
	spec.FailurePolicy = fp
	h.create("failjob", spec)
	obj = h.waitPhase("failjob", fluxjobv1.PhaseFailed, 60*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonFailurePolicy)
	if a := obj.Status.Array; a.FailedIndexes != "1" || a.Cancelled != 2 || a.Active != 0 {
		t.Errorf("status.array = %+v", a)
	}
	h.checkAttempts(obj, map[int]int{0: 1, 1: 1, 2: 1})
}

// TestEnvtestArrayRetryCrashRecovery: a manager died between attempts.
// Its marker covers indexes 0-5; of what it submitted, job-list lists late
// (longer than the adopt window): index 0's attempt 0 failed and its
// attempt 1 is not submitted; index 1's attempts 0 and 1 failed and
// attempt 2 runs; index 2's attempt 0 succeeded; index 3's attempt 0
// failed on an Ignore rule and attempt 1 is not submitted; indexes 4 and
// 5 were never submitted. The next manager submits exactly index 0's
// attempt 1, index 3's attempt 1 and indexes 4 and 5, adopts index 1's
// attempt 2 and counts its failures right (one more would exceed
// backoffLimitPerIndex 2, and that one succeeds).
func TestEnvtestArrayRetryCrashRecovery(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{
		"p0": failing(1, 1),
		"p1": append(failing(2, 1), testbroker.Outcome{Run: 2 * time.Second}),
		"p3": failing(1, 5),
	})
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{AdoptWindow: time.Second})
	fp := policy(onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 5))
	obj := h.create("crash", retryArraySpec("0-5", 2, fp))
	conn, ctx := brokerClient(t, h)
	if _, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, "someone-else"), job.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	anchor := h.maxJobID()
	submit := func(index, attempt int) job.ID {
		id, err := job.Submit(ctx, conn, namedJobspec(t, []string{fmt.Sprintf("p%d", index)}, jobspec.IndexName(obj, index, attempt)), job.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, ia := range [][2]int{{0, 0}, {1, 0}, {2, 0}, {3, 0}, {1, 1}} {
		waitEnded(t, h, submit(ia[0], ia[1])) // each attempt after the previous one ended
	}
	h.broker.SetListLag(8 * time.Second)
	submit(1, 2)
	base := obj.DeepCopy()
	if err := (submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(time.Now().Add(-time.Minute)), Instance: "default", After: anchor, Through: 6}).setOn(obj); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Patch(context.Background(), obj, clientMergeLocked(base)); err != nil {
		t.Fatal(err)
	}
	h.start()
	obj = h.waitPhase("crash", fluxjobv1.PhaseSucceeded, 90*time.Second)
	if a := obj.Status.Array; a.Succeeded != 6 || a.SucceededIndexes != "0-5" {
		t.Fatalf("status.array = %+v", a)
	}
	waitUntil(t, "job-list lists every job", func() bool {
		jobs, err := job.List(ctx, conn, job.ListOptions{Attrs: []string{"name"}})
		return err == nil && len(jobs) == len(h.broker.Jobs())
	})
	h.checkAttempts(obj, map[int]int{0: 2, 1: 3, 2: 1, 3: 2, 4: 1, 5: 1})
}

// TestEnvtestArrayRetryRestart: the manager stops while indexes are
// between attempts and a new one finishes the array: no attempt twice.
func TestEnvtestArrayRetryRestart(t *testing.T) {
	p := newPlans(map[string][]testbroker.Outcome{})
	for i := range 12 {
		p.plans[fmt.Sprintf("p%d", i)] = append(failing(i%3, 1), testbroker.Outcome{Run: 200 * time.Millisecond})
	}
	h := newHarness(t, testbroker.Options{Outcome: indexOutcome(p)}, Options{AdoptWindow: time.Second})
	h.start()
	spec := retryArraySpec("0-11", 2, nil)
	four := int32(4)
	spec.Array.Parallelism = &four
	h.create("restart", spec)
	h.waitFor("restart", 30*time.Second, "some retries", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Array != nil && o.Status.Array.Retries >= 2
	})
	h.stop()
	h.start()
	obj := h.waitPhase("restart", fluxjobv1.PhaseSucceeded, 90*time.Second)
	want := map[int]int{}
	for i := range 12 {
		want[i] = i%3 + 1
	}
	h.checkAttempts(obj, want)
}
