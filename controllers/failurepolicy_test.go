package controllers

import (
	"testing"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Endings as flux-core 0.88 reports them (test/realflux TestFailureEndings).
var (
	exc = func(typ string, sev int, note string) job.ExceptionContext {
		return job.ExceptionContext{Type: typ, Severity: sev, Note: note}
	}
	code = func(c int32) *int32 { return &c }

	exit3      = ending{ExitCode: code(3)}
	killed9    = ending{ExitCode: code(137)}
	timedOut   = fatalEnding(code(142), exc("timeout", 0, "resource allocation expired"))
	cancelRun  = fatalEnding(code(143), exc("cancel", 0, ""))
	cancelPend = fatalEnding(nil, exc("cancel", 0, ""))
	execFail   = fatalEnding(code(127), exc("exec", 0, "task 0 (host vm): start failed: /nonexistent: No such file or directory"))
	nodeLost   = fatalEnding(code(143), exc("exec", 0, "node failure on vm (rank 1)"))
	warned     = ending{ExitCode: code(1), Exceptions: []job.ExceptionContext{exc("node-failure", 2, "lost")}}
)

func fatalEnding(c *int32, x job.ExceptionContext) ending {
	return ending{ExitCode: c, Exceptions: []job.ExceptionContext{x}, Fatal: &x}
}

func policy(rules ...fluxjobv1.FailurePolicyRule) *fluxjobv1.FailurePolicy {
	return &fluxjobv1.FailurePolicy{Rules: rules}
}

func onCodes(a fluxjobv1.FailurePolicyAction, op fluxjobv1.ExitCodeOperator, v ...int32) fluxjobv1.FailurePolicyRule {
	return fluxjobv1.FailurePolicyRule{Action: a, OnExitCodes: &fluxjobv1.FailurePolicyOnExitCodes{Operator: op, Values: v}}
}

func onExc(a fluxjobv1.FailurePolicyAction, m ...fluxjobv1.FailurePolicyOnException) fluxjobv1.FailurePolicyRule {
	return fluxjobv1.FailurePolicyRule{Action: a, OnExceptions: m}
}

func TestDecide(t *testing.T) {
	sev := func(n int32) *int32 { return &n }
	hpc := policy( // retry a lost node, never a task's own failure
		onExc(fluxjobv1.ActionRetry, fluxjobv1.FailurePolicyOnException{Type: "exec", NoteContains: "node failure"}),
		onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeNotIn, 0),
	)
	cases := []struct {
		name          string
		policy        *fluxjobv1.FailurePolicy
		limit, failed int32
		e             ending
		action        fluxjobv1.FailurePolicyAction
		rule          int
		retry, count  bool
		reason        string
		excType       string
	}{
		{name: "no rule, limit left", limit: 2, e: exit3, action: fluxjobv1.ActionRetry, rule: -1, retry: true, count: true},
		{name: "no rule, limit reached", limit: 2, failed: 2, e: exit3, action: fluxjobv1.ActionRetry, rule: -1, count: true,
			reason: fluxjobv1.ReasonBackoffLimitExceeded},
		{name: "no rule, limit 0", e: killed9, action: fluxjobv1.ActionRetry, rule: -1, count: true, reason: fluxjobv1.ReasonBackoffLimitExceeded},
		{name: "cancel is not retried by default", limit: 5, e: cancelRun, action: "", rule: -1, excType: "cancel"},
		{name: "cancel while pending", limit: 5, e: cancelPend, action: "", rule: -1, excType: "cancel"},
		{name: "rule retries cancel", limit: 5, e: cancelRun, policy: policy(onExc(fluxjobv1.ActionRetry, fluxjobv1.FailurePolicyOnException{Type: "cancel"})),
			action: fluxjobv1.ActionRetry, rule: 0, retry: true, count: true, excType: "cancel"},
		{name: "exit code In", limit: 5, e: exit3, policy: policy(onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 2, 3)),
			action: fluxjobv1.ActionFailJob, rule: 0, reason: fluxjobv1.ReasonFailurePolicy},
		{name: "exit code In, no match", limit: 5, e: exit3, policy: policy(onCodes(fluxjobv1.ActionFailJob, fluxjobv1.ExitCodeIn, 1)),
			action: fluxjobv1.ActionRetry, rule: -1, retry: true, count: true},
		{name: "exit code NotIn", limit: 5, e: killed9, policy: policy(onCodes(fluxjobv1.ActionFailIndex, fluxjobv1.ExitCodeNotIn, 0, 1)),
			action: fluxjobv1.ActionFailIndex, rule: 0, reason: fluxjobv1.ReasonFailurePolicy},
		{name: "exit code rule and a timeout (exit 142)", limit: 5, e: timedOut, policy: policy(onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeIn, 142)),
			action: fluxjobv1.ActionIgnore, rule: 0, retry: true, excType: "timeout"},
		{name: "no exit code: exit rule does not match", limit: 0, e: cancelPend, policy: policy(onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeNotIn, 0)),
			action: "", rule: -1, excType: "cancel"},
		{name: "ignore does not count, even past the limit", failed: 3, limit: 3, e: timedOut,
			policy: policy(onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "timeout"})),
			action: fluxjobv1.ActionIgnore, rule: 0, retry: true, excType: "timeout"},
		{name: "first match wins", limit: 5, e: timedOut, policy: policy(
			onExc(fluxjobv1.ActionFailJob, fluxjobv1.FailurePolicyOnException{Type: "timeout"}),
			onCodes(fluxjobv1.ActionIgnore, fluxjobv1.ExitCodeNotIn, 0)),
			action: fluxjobv1.ActionFailJob, rule: 0, reason: fluxjobv1.ReasonFailurePolicy, excType: "timeout"},
		{name: "any type", limit: 5, e: execFail, policy: policy(onExc(fluxjobv1.ActionFailJob, fluxjobv1.FailurePolicyOnException{})),
			action: fluxjobv1.ActionFailJob, rule: 0, reason: fluxjobv1.ReasonFailurePolicy, excType: "exec"},
		{name: "hpc: node failure retried", limit: 2, e: nodeLost, policy: hpc, action: fluxjobv1.ActionRetry, rule: 0, retry: true, count: true, excType: "exec"},
		{name: "hpc: start failure not retried", limit: 2, e: execFail, policy: hpc, action: fluxjobv1.ActionFailJob, rule: 1,
			reason: fluxjobv1.ReasonFailurePolicy, excType: "exec"},
		{name: "hpc: nonzero exit not retried", limit: 2, e: exit3, policy: hpc, action: fluxjobv1.ActionFailJob, rule: 1, reason: fluxjobv1.ReasonFailurePolicy},
		{name: "non-fatal exception needs maxSeverity", limit: 0, e: warned,
			policy: policy(onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "node-failure"})),
			action: fluxjobv1.ActionRetry, rule: -1, count: true, reason: fluxjobv1.ReasonBackoffLimitExceeded},
		{name: "non-fatal exception within maxSeverity", limit: 0, e: warned,
			policy: policy(onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "node-failure", MaxSeverity: sev(2)})),
			action: fluxjobv1.ActionIgnore, rule: 0, retry: true, excType: "node-failure"},
		{name: "maxSeverity below the exception's", limit: 0, e: warned,
			policy: policy(onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "node-failure", MaxSeverity: sev(1)})),
			action: fluxjobv1.ActionRetry, rule: -1, count: true, reason: fluxjobv1.ReasonBackoffLimitExceeded},
		{name: "note must contain", limit: 0, e: execFail,
			policy: policy(onExc(fluxjobv1.ActionIgnore, fluxjobv1.FailurePolicyOnException{Type: "exec", NoteContains: "node failure"})),
			action: fluxjobv1.ActionRetry, rule: -1, count: true, reason: fluxjobv1.ReasonBackoffLimitExceeded, excType: "exec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := decide(tc.policy, tc.limit, tc.failed, tc.e)
			if v.Action != tc.action || v.Rule != tc.rule || v.Retry != tc.retry || v.Counted != tc.count || v.Reason != tc.reason {
				t.Errorf("decide = {action %q rule %d retry %v counted %v reason %q}, want {%q %d %v %v %q} (%s)",
					v.Action, v.Rule, v.Retry, v.Counted, v.Reason, tc.action, tc.rule, tc.retry, tc.count, tc.reason, v.Message)
			}
			got := ""
			if v.Exception != nil {
				got = v.Exception.Type
			}
			if got != tc.excType {
				t.Errorf("exception %q, want %q", got, tc.excType)
			}
			if v.Message == "" {
				t.Error("no message")
			}
		})
	}
}

func TestExitCodeAndResult(t *testing.T) {
	cases := []struct {
		status job.WaitStatus
		want   int32
	}{
		{0, 0}, {256, 1}, {768, 3}, {35072, 137}, {36352, 142}, {32512, 127}, {9, 137}, {15 | 0x80, 143},
	}
	for _, tc := range cases {
		if got := exitCode(tc.status); got != tc.want {
			t.Errorf("exitCode(%d) = %d, want %d", tc.status, got, tc.want)
		}
	}
	for e, want := range map[*ending]string{
		&exit3: "FAILED", &timedOut: "TIMEOUT", &cancelPend: "CANCELED", &execFail: "FAILED", {ExitCode: code(0)}: "COMPLETED",
	} {
		if got := fluxResult(*e); got != want {
			t.Errorf("fluxResult(%+v) = %s, want %s", *e, got, want)
		}
	}
}
