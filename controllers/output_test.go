package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

func TestOutputTailBytes(t *testing.T) {
	tests := []struct {
		spec *fluxjobv1.FluxJobOutputSpec
		want int
	}{
		{nil, 4096},
		{&fluxjobv1.FluxJobOutputSpec{}, 4096},
		{&fluxjobv1.FluxJobOutputSpec{TailBytes: ptrTo[int32](0)}, 0},
		{&fluxjobv1.FluxJobOutputSpec{TailBytes: ptrTo[int32](100)}, 100},
		{&fluxjobv1.FluxJobOutputSpec{TailBytes: ptrTo[int32](1 << 30)}, 65536},
	}
	for _, tc := range tests {
		if got := outputTailBytes(&fluxjobv1.FluxJob{Spec: fluxjobv1.FluxJobSpec{Output: tc.spec}}); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.spec, got, tc.want)
		}
	}
}

// TestEnvtestOutputTails: jobs that print to stdout and stderr end with
// both tails in the status, written with the final status.
func TestEnvtestOutputTails(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	long := strings.Repeat("x", 4000)
	longArgs := []string{"echo"}
	for range 20 {
		longArgs = append(longArgs, long)
	}
	tests := []struct {
		name   string
		spec   fluxjobv1.FluxJobSpec
		phase  fluxjobv1.FluxJobPhase
		stdout string
		stderr string
		bytes  [2]int64
	}{
		{"both", cmdSpec("sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"),
			fluxjobv1.PhaseSucceeded, "out1\nout2\n", "err1\nerr2\n", [2]int64{10, 10}},
		{"binary", cmdSpec("sh", "-c", `printf 'bin\xff\xfe\n'; exit 3`),
			fluxjobv1.PhaseFailed, `bin\xff\xfe` + "\n", "", [2]int64{6, 0}},
		{"huge-line", cmdSpec(longArgs...),
			fluxjobv1.PhaseSucceeded, strings.Repeat("x", 94) + " " + long + "\n", "", [2]int64{20 * 4001, 0}},
		{"small-tail", fluxjobv1.FluxJobSpec{Command: []string{"echo", "0123456789"}, Output: &fluxjobv1.FluxJobOutputSpec{TailBytes: ptrTo[int32](4)}},
			fluxjobv1.PhaseSucceeded, "789\n", "", [2]int64{11, 0}},
		{"two-tasks", fluxjobv1.FluxJobSpec{Command: []string{"echo", "hi"}, Tasks: ptrTo[int32](2)},
			fluxjobv1.PhaseSucceeded, "hi\nhi\n", "", [2]int64{6, 0}},
	}
	for _, tc := range tests {
		h.create(tc.name, tc.spec)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := h.waitPhase(tc.name, tc.phase, 30*time.Second)
			out := obj.Status.Output
			if out == nil {
				t.Fatalf("no status.output: %+v", obj.Status)
			}
			if out.Stdout != tc.stdout || out.Stderr != tc.stderr || out.StdoutBytes != tc.bytes[0] || out.StderrBytes != tc.bytes[1] || out.Message != "" {
				t.Fatalf("output %q / %q (%d, %d bytes, message %q), want %q / %q %v",
					short(out.Stdout), short(out.Stderr), out.StdoutBytes, out.StderrBytes, out.Message, short(tc.stdout), short(tc.stderr), tc.bytes)
			}
			// the tails came with the one terminal write: no write after
			// it, and no more writes than a job without output gets
			// (Pending with the submit marker, maybe Submitted/Running
			// when a reconcile ran before the next event, the end)
			status, _, phases := h.counts.writesAfter(tc.name, tc.phase, 10*time.Second)
			if status > 4 || len(phases) == 0 || phases[len(phases)-1] != string(tc.phase) || slices.Index(phases, string(tc.phase)) != len(phases)-1 {
				t.Fatalf("%d status writes (phases %v), want the %s one last and once, at most 4", status, phases, tc.phase)
			}
		})
	}
}

// short cuts long strings for messages.
func short(s string) string {
	if len(s) > 100 {
		return fmt.Sprintf("%s...(%d bytes)...%s", s[:40], len(s), s[len(s)-40:])
	}
	return s
}

// TestEnvtestOutputNone: tailBytes 0, and a job that never started (its
// request cannot be satisfied), end without status.output.
func TestEnvtestOutputNone(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("off", fluxjobv1.FluxJobSpec{Command: []string{"echo", "x"}, Output: &fluxjobv1.FluxJobOutputSpec{TailBytes: ptrTo[int32](0)}})
	h.create("never-ran", fluxjobv1.FluxJobSpec{Command: []string{"echo", "x"}, CoresPerTask: ptrTo[int32](1000)})
	if o := h.waitPhase("off", fluxjobv1.PhaseSucceeded, 30*time.Second); o.Status.Output != nil {
		t.Fatalf("tailBytes 0: output %+v", o.Status.Output)
	}
	if o := h.waitPhase("never-ran", fluxjobv1.PhaseFailed, 30*time.Second); o.Status.Output != nil || o.Status.StartTime != nil {
		t.Fatalf("never started: output %+v, start %v", o.Status.Output, o.Status.StartTime)
	}
}
