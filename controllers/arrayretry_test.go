package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
)

func TestJudgeIndex(t *testing.T) {
	i32 := func(n int32) *int32 { return &n }
	perIndex := func(limit int32, fp *fluxjobv1.FailurePolicy) *array.Retry {
		return array.RetryOf(&fluxjobv1.ArraySpec{BackoffLimitPerIndex: i32(limit)}, fp)
	}
	rules := policy(
		onCodes(fluxjobv1.ActionFailIndex, fluxjobv1.ExitCodeIn, 3),
		onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 4),
		onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 5),
		onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "exec", NoteContains: "node failure"}),
	)
	exit := func(c int32) ending { return ending{ExitCode: code(c)} }
	cases := []struct {
		name                      string
		rt                        *array.Retry
		attempt, counted, ignored int
		e                         ending
		cancelling                bool
		step                      indexStep
		counts                    bool
	}{
		{name: "success", rt: perIndex(2, nil), e: exit(0), step: stepSucceeded},
		{name: "success while cancelling", rt: perIndex(2, nil), e: exit(0), cancelling: true, step: stepSucceeded},
		{name: "no retries: failed", e: exit(1), step: stepFailIndex},
		{name: "no retries: cancelled by the ending array", e: cancelRun, cancelling: true, step: stepCancelled},
		{name: "limit left", rt: perIndex(2, nil), e: exit(1), step: stepRetry, counts: true},
		{name: "second retry", rt: perIndex(2, nil), attempt: 1, counted: 1, e: exit(1), step: stepRetry, counts: true},
		{name: "limit reached", rt: perIndex(2, nil), attempt: 2, counted: 2, e: exit(1), step: stepFailIndex},
		{name: "limit 0", rt: perIndex(0, nil), e: exit(1), step: stepFailIndex},
		{name: "FailIndex rule", rt: perIndex(2, rules), e: exit(3), step: stepFailIndex},
		{name: "FailJob rule", rt: perIndex(2, rules), e: exit(4), step: stepFailArray},
		{name: "Ignore rule: not counted", rt: perIndex(0, rules), e: exit(5), step: stepRetry},
		{name: "Ignore rule on an exception", rt: perIndex(0, rules), e: nodeLost, step: stepRetry},
		{name: "Ignore past its bound", rt: perIndex(0, rules), attempt: fluxjobv1.MaxIgnoredPerIndex, ignored: fluxjobv1.MaxIgnoredPerIndex,
			e: exit(5), step: stepFailIndex},
		{name: "policy without a per-index limit: Ignore retries", rt: array.RetryOf(&fluxjobv1.ArraySpec{}, rules), e: exit(5), step: stepRetry},
		{name: "policy without a per-index limit: a count fails the index", rt: array.RetryOf(&fluxjobv1.ArraySpec{}, rules), e: exit(1), step: stepFailIndex},
		{name: "a cancel no rule matches is not retried", rt: perIndex(2, nil), e: cancelRun, step: stepFailIndex},
		{name: "failure while the array ends is not retried", rt: perIndex(2, nil), e: exit(1), cancelling: true, step: stepFailIndex},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := judgeIndex(tc.rt, tc.attempt, tc.counted, tc.ignored, tc.e, tc.cancelling)
			if v.Step != tc.step || (v.Step == stepRetry && v.Counted != tc.counts) {
				t.Errorf("judgeIndex = %+v, want step %d counted %v", v, tc.step, tc.counts)
			}
		})
	}
}

func TestRetryOfWindow(t *testing.T) {
	two := int32(2)
	cases := []struct {
		name   string
		a      fluxjobv1.ArraySpec
		fp     *fluxjobv1.FailurePolicy
		nil    bool
		window int
	}{
		{name: "nothing", nil: true},
		{name: "per index", a: fluxjobv1.ArraySpec{BackoffLimitPerIndex: &two}, window: 2},
		{name: "per index and Ignore", a: fluxjobv1.ArraySpec{BackoffLimitPerIndex: &two},
			fp: policy(onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 5)), window: 2 + fluxjobv1.MaxIgnoredPerIndex},
		{name: "policy only", fp: policy(onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 5)), window: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt := array.RetryOf(&tc.a, tc.fp)
			if (rt == nil) != tc.nil || rt != nil && rt.Window != tc.window {
				t.Errorf("RetryOf = %+v", rt)
			}
		})
	}
}

// TestEndingsAgree: an attempt's ending as its future reports it and as
// job-list records it (read after a restart) are judged alike.
func TestEndingsAgree(t *testing.T) {
	ws := func(v int) *job.WaitStatus { w := job.WaitStatus(v); return &w }
	cases := []struct {
		name string
		out  broker.Outcome
		l    broker.Listed
	}{
		{"exit 3", broker.Outcome{Kind: broker.OutcomeExited, ExitCode: 3}, broker.Listed{WaitStatus: ws(3 << 8)}},
		{"signal 9", broker.Outcome{Kind: broker.OutcomeExited, ExitCode: -9}, broker.Listed{WaitStatus: ws(9)}},
		{"timeout", broker.Outcome{Kind: broker.OutcomeException, ExcType: "timeout", ExcNote: "resource allocation expired"},
			broker.Listed{ExcType: "timeout", ExcNote: "resource allocation expired", WaitStatus: ws(142 << 8)}},
		{"exec", broker.Outcome{Kind: broker.OutcomeException, ExcType: "exec", ExcNote: "node failure on vm (rank 1)"},
			broker.Listed{ExcType: "exec", ExcNote: "node failure on vm (rank 1)"}},
		{"non-fatal exception, exit 1", broker.Outcome{Kind: broker.OutcomeExited, ExitCode: 1},
			broker.Listed{ExcType: "node-failure", ExcSeverity: 2, WaitStatus: ws(1 << 8)}},
	}
	rt := array.RetryOf(&fluxjobv1.ArraySpec{}, policy(
		onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "exec", NoteContains: "node failure"}),
		onExc(fluxjobv1.ActionFailJob, fluxjobv1.FailurePolicyOnException{Type: "timeout"}),
		onCodes(fluxjobv1.ActionFailIndex, fluxjobv1.ExitCodeIn, 137),
	))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := endingOfOutcome(tc.out)
			if !ok {
				t.Fatal("not judged")
			}
			live := judgeIndex(rt, 0, 0, 0, e, false)
			later := judgeIndex(rt, 0, 0, 0, endingOfListed(tc.l), false)
			if live != later {
				t.Errorf("live %+v, after a restart %+v", live, later)
			}
		})
	}
}

// TestFoundAttempts: the newest attempt found decides; the earlier ones
// are judged again to count the failures ignored.
func TestFoundAttempts(t *testing.T) {
	two := int32(2)
	rt := array.RetryOf(&fluxjobv1.ArraySpec{BackoffLimitPerIndex: &two}, policy(onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 5)))
	ws := func(v int) *job.WaitStatus { w := job.WaitStatus(v); return &w }
	names := []string{"a", "a.1", "a.2", "a.3"}
	found := map[string]broker.Listed{
		"a":   {ID: 1, WaitStatus: ws(5 << 8)},
		"a.1": {ID: 2, WaitStatus: ws(1 << 8)},
		"a.2": {ID: 3, Active: true},
	}
	a := foundAttempts(rt, names, found)
	if a.Newest != 2 || a.Job.ID != 3 || a.Counted != 1 || a.Ignored != 1 {
		t.Errorf("foundAttempts = %+v", a)
	}
	if a := foundAttempts(rt, names, nil); a.Newest != -1 {
		t.Errorf("nothing found: %+v", a)
	}
}

// TestIndexRetryMemory: an index's retries move it back to Unsubmitted at
// the next attempt; the per-index bytes exist only once one retried.
func TestIndexRetryMemory(t *testing.T) {
	set, _ := idset.Parse("0-3", 0)
	run := array.New("u", types.NamespacedName{}, set, 4)
	two := int32(2)
	run.Retry = array.RetryOf(&fluxjobv1.ArraySpec{BackoffLimitPerIndex: &two}, nil)
	for p := range 4 {
		run.Move(p, array.Unsubmitted, array.Uncertain)
	}
	run.Take(4, 4)
	run.SetID(1, 11)
	indexDone(run, 1, broker.Outcome{Kind: broker.OutcomeExited, ExitCode: 1})
	if got := run.Attempt(1); got != 1 {
		t.Fatalf("attempt after a failure = %d, want 1", got)
	}
	if got := run.Take(4, 4); len(got) != 1 || got[0] != 1 {
		t.Fatalf("Take = %v, want the retried index", got)
	}
	indexDone(run, 1, broker.Outcome{Kind: broker.OutcomeExited, ExitCode: 1})
	run.Take(4, 4)
	indexDone(run, 1, broker.Outcome{Kind: broker.OutcomeExited, ExitCode: 1})
	c := run.Counts()
	if c.Failed != 1 || run.Attempt(1) != 2 || run.Status().Retries != 2 {
		t.Errorf("after the limit: %+v attempt %d retries %d", c, run.Attempt(1), run.Status().Retries)
	}
	if c, i := run.Failures(1); c != 2 || i != 0 {
		t.Errorf("failures %d counted %d ignored", c, i)
	}
}
