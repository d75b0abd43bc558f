package main

import (
	"strings"
	"testing"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestIndexes: `indexes` lists an array's index -> Flux job ID with state
// and result; `logs --index` and `events --index` follow one index's job;
// an array without --index, or an index it does not have, is refused.
func TestIndexes(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	w.create("arr", fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", "echo index {cc}; exit {cc}"},
		Array: &fluxjobv1.ArraySpec{Indexes: "0-2,7"}})
	w.waitPhase("arr", fluxjobv1.PhaseFailed)
	out, _, err := w.pluginOut("indexes", "arr")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "INDEX") {
		t.Fatalf("indexes printed:\n%s", out)
	}
	for i, want := range []struct{ index, result string }{{"0", "COMPLETED"}, {"1", "FAILED"}, {"2", "FAILED"}, {"7", "FAILED"}} {
		f := strings.Fields(lines[i+1])
		if len(f) != 4 || f[0] != want.index || !strings.HasPrefix(f[1], "ƒ") || f[2] != "INACTIVE" || f[3] != want.result {
			t.Errorf("line %q, want index %s %s", lines[i+1], want.index, want.result)
		}
	}
	if out, _, err := w.pluginOut("logs", "arr", "--index", "7"); err != nil || out != "index 7\n" {
		t.Errorf("logs --index 7: %q, %v", out, err)
	}
	if out, _, err := w.pluginOut("events", "arr", "--index", "2"); err != nil || !strings.Contains(out, "finish") {
		t.Errorf("events --index 2: %q, %v", out, err)
	}
	if _, _, err := w.pluginOut("logs", "arr"); err == nil || !strings.Contains(err.Error(), "--index") {
		t.Errorf("logs of an array without --index: %v", err)
	}
	if _, _, err := w.pluginOut("logs", "arr", "--index", "5"); err == nil || !strings.Contains(err.Error(), "no index 5") {
		t.Errorf("logs of an index the array does not have: %v", err)
	}
}

// TestIndexesAttempts: an array that retries its indexes lists each
// index's newest attempt (fluxjob-<uid>-<index>.<attempt>); `events
// --index` finds an index's job among its attempts.
func TestIndexesAttempts(t *testing.T) {
	w := newWorld(t, testbroker.Options{})
	one := int32(1)
	w.create("retried", fluxjobv1.FluxJobSpec{Command: []string{"sh", "-c", "exit {cc}"},
		Array: &fluxjobv1.ArraySpec{Indexes: "0-1", BackoffLimitPerIndex: &one}})
	w.waitPhase("retried", fluxjobv1.PhaseFailed)
	out, _, err := w.pluginOut("indexes", "retried")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "INDEX JOBID ATTEMPT STATE RESULT" {
		t.Fatalf("indexes printed:\n%s", out)
	}
	for i, want := range []struct{ index, attempt, result string }{{"0", "0", "COMPLETED"}, {"1", "1", "FAILED"}} {
		f := strings.Fields(lines[i+1])
		if len(f) != 5 || f[0] != want.index || f[2] != want.attempt || f[4] != want.result {
			t.Errorf("line %q, want index %s attempt %s %s", lines[i+1], want.index, want.attempt, want.result)
		}
	}
	if out, _, err := w.pluginOut("events", "retried", "--index", "1"); err != nil || !strings.Contains(out, "finish") {
		t.Errorf("events --index 1: %q, %v", out, err)
	}
}
