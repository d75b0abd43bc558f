package controllers

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// arraySpec is a command array over indexes.
func arraySpec(indexes string, cmd ...string) fluxjobv1.FluxJobSpec {
	return fluxjobv1.FluxJobSpec{Command: cmd, Array: &fluxjobv1.ArraySpec{Indexes: indexes}}
}

// checkOnePerIndex asserts that the broker holds exactly one job named
// after each index of want (fluxjob-<uid>-<i>) and no other job of obj.
func (h *harness) checkOnePerIndex(obj *fluxjobv1.FluxJob, want []int) {
	h.t.Helper()
	byName := h.brokerJobsByName()
	prefix := jobspec.Name(obj) + "-"
	seen := 0
	for name, ids := range byName {
		if len(name) > len(prefix) && name[:len(prefix)] == prefix {
			seen++
			if len(ids) != 1 {
				h.t.Errorf("index job %s submitted %d times: %v", name, len(ids), ids)
			}
		}
	}
	for _, i := range want {
		if len(byName[jobspec.IndexName(obj, i, 0)]) == 0 {
			h.t.Errorf("index %d has no Flux job", i)
		}
	}
	if seen != len(want) {
		h.t.Errorf("%d index jobs at the broker, want %d", seen, len(want))
	}
}

func seq(lo, hi int) []int {
	var out []int
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}

// TestEnvtestArray: an array of six indexes, `exit {cc}`: index 0
// succeeds, the others fail with their index as exit code. One Flux job
// per index, the status counts and idsets, and a handful of writes.
func TestEnvtestArray(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("arr", arraySpec("0-4,10", "exit", "{cc}"))
	obj := h.waitPhase("arr", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonIndexesFailed)
	a := obj.Status.Array
	if a == nil || a.Indexes != 6 || a.Succeeded != 1 || a.Failed != 5 || a.Active != 0 || a.Pending != 0 ||
		a.SucceededIndexes != "0" || a.FailedIndexes != "1-4,10" || a.IndexesTruncated {
		t.Fatalf("status.array = %+v", a)
	}
	if obj.Status.JobID != 0 {
		t.Errorf("an array has no single job ID, status says %d", obj.Status.JobID)
	}
	h.checkOnePerIndex(obj, []int{0, 1, 2, 3, 4, 10})
	// Exit codes as the test broker ran `exit <index>`: {cc} was replaced.
	byName := h.brokerJobsByName()
	conn, ctx := brokerClient(t, h)
	for _, i := range []int{3, 10} {
		info, err := job.ListID(ctx, conn, byName[jobspec.IndexName(obj, i, 0)][0], "waitstatus")
		if err != nil {
			t.Fatal(err)
		}
		if info.WaitStatus == nil || info.WaitStatus.ExitCode() != i {
			got := -1
			if info.WaitStatus != nil {
				got = info.WaitStatus.ExitCode()
			}
			t.Errorf("index %d exited %d, want %d", i, got, i)
		}
	}
}

// TestEnvtestArrayWritesPerArray: 300 indexes cost a few API writes, not
// one per index.
func TestEnvtestArrayWritesPerArray(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("many", arraySpec("0-299", "true"))
	obj := h.waitPhase("many", fluxjobv1.PhaseSucceeded, 60*time.Second)
	if a := obj.Status.Array; a.Succeeded != 300 || a.SucceededIndexes != "0-299" {
		t.Fatalf("status.array = %+v", a)
	}
	status, object, phases := h.counts.writesAfter("many", fluxjobv1.PhaseSucceeded, 5*time.Second)
	t.Logf("300 indexes: %d status writes %v, %d object writes", status, phases, object)
	if status > 12 || object > 2 {
		t.Errorf("300 indexes took %d status and %d object writes: the writes must not grow with the indexes", status, object)
	}
	h.checkOnePerIndex(obj, seq(0, 299))
}

// TestEnvtestArrayParallelism: at most two index jobs are active at the
// broker at any time (from job-list's submit and cleanup times).
func TestEnvtestArrayParallelism(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	spec := arraySpec("0-5", "sleep", "0.2")
	two := int32(2)
	spec.Array.Parallelism = &two
	h.create("par", spec)
	obj := h.waitPhase("par", fluxjobv1.PhaseSucceeded, 60*time.Second)
	h.checkOnePerIndex(obj, seq(0, 5))
	conn, ctx := brokerClient(t, h)
	jobs, err := job.List(ctx, conn, job.ListOptions{Attrs: []string{"name", "t_submit", "t_cleanup"}})
	if err != nil {
		t.Fatal(err)
	}
	type edge struct {
		at    float64
		delta int
	}
	var edges []edge
	for _, j := range jobs {
		if j.TCleanup == 0 {
			t.Fatalf("job %s never reached cleanup", j.Name)
		}
		edges = append(edges, edge{j.TSubmit, 1}, edge{j.TCleanup, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at != edges[j].at {
			return edges[i].at < edges[j].at
		}
		return edges[i].delta < edges[j].delta
	})
	active, most := 0, 0
	for _, e := range edges {
		active += e.delta
		most = max(most, active)
	}
	if most != 2 {
		t.Errorf("at most %d index jobs were active at once, want 2 (parallelism)", most)
	}
}

// TestEnvtestArraySuccessPolicy: index 0 ends at once, the others sleep;
// the policy "index 0 succeeded" ends the array Succeeded and cancels the
// rest, which are neither succeeded nor failed.
func TestEnvtestArraySuccessPolicy(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	spec := arraySpec("0-4", "sleep", "{cc}00")
	spec.Array.SuccessPolicy = &fluxjobv1.ArraySuccessPolicy{Rules: []fluxjobv1.ArraySuccessRule{{SucceededIndexes: "0"}}}
	h.create("pol", spec)
	obj := h.waitPhase("pol", fluxjobv1.PhaseSucceeded, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionSucceeded, metav1.ConditionTrue, fluxjobv1.ReasonSuccessPolicy)
	if a := obj.Status.Array; a.Succeeded != 1 || a.Cancelled != 4 || a.Failed != 0 || a.SucceededIndexes != "0" {
		t.Fatalf("status.array = %+v", a)
	}
	byName := h.brokerJobsByName()
	for i := 1; i <= 4; i++ {
		ids := byName[jobspec.IndexName(obj, i, 0)]
		if len(ids) != 1 {
			t.Fatalf("index %d: %d jobs", i, len(ids))
		}
		cancelled := false
		for _, ev := range waitEnded(t, h, ids[0]) {
			if ev.Name == job.EventException && ev.Context["type"] == "cancel" {
				cancelled = true
			}
		}
		if !cancelled {
			t.Errorf("index %d's job was not cancelled", i)
		}
	}
}

// TestEnvtestArrayCountPolicy: succeededCount over all indexes.
func TestEnvtestArrayCountPolicy(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	spec := arraySpec("0-9", "sleep", "{cc}")
	three := int32(3)
	spec.Array.SuccessPolicy = &fluxjobv1.ArraySuccessPolicy{Rules: []fluxjobv1.ArraySuccessRule{{SucceededCount: &three}}}
	h.create("cnt", spec)
	obj := h.waitPhase("cnt", fluxjobv1.PhaseSucceeded, 30*time.Second)
	if a := obj.Status.Array; a.Succeeded < 3 || a.Succeeded+a.Cancelled != 10 || a.Failed != 0 {
		t.Fatalf("status.array = %+v", a)
	}
}

// TestEnvtestArrayCrashRecovery: a manager died mid-submission: its
// marker covers indexes 0-599, and it had submitted 0-399 (0-199 ended,
// 200-399 are pending in Flux) before it died; job-list lists late. The
// next manager must adopt all 400 jobs and submit exactly the 200 it
// never submitted and the indexes above the marker: one Flux job per
// index.
func TestEnvtestArrayCrashRecovery(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Second})
	obj := h.create("crash", arraySpec("0-999", "true"))
	conn, ctx := brokerClient(t, h)
	// Another user's job, before the array: the marker's anchor.
	if _, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, "someone-else"), job.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	anchor := h.maxJobID()
	// job-list lists the dead manager's jobs 8s late: longer than the
	// adopt window, so only the catch-up barrier keeps them from being
	// submitted again.
	h.broker.SetListLag(8 * time.Second)
	for i := 0; i < 400; i++ {
		if i == 200 {
			h.broker.PauseScheduling(true)
		}
		if _, err := job.Submit(ctx, conn, namedJobspec(t, []string{"true"}, jobspec.IndexName(obj, i, 0)), job.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	base := obj.DeepCopy()
	if err := (submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(time.Now()), Instance: "default", After: anchor, Through: 600}).setOn(obj); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Patch(context.Background(), obj, clientMergeLocked(base)); err != nil {
		t.Fatal(err)
	}
	h.start()
	time.AfterFunc(time.Second, func() { h.broker.PauseScheduling(false) })
	obj = h.waitPhase("crash", fluxjobv1.PhaseSucceeded, 90*time.Second)
	if a := obj.Status.Array; a.Succeeded != 1000 || a.SucceededIndexes != "0-999" {
		t.Fatalf("status.array = %+v", a)
	}
	waitUntil(t, "job-list lists every job", func() bool {
		jobs, err := job.List(ctx, conn, job.ListOptions{Attrs: []string{"name"}})
		return err == nil && len(jobs) == len(h.broker.Jobs())
	})
	h.checkOnePerIndex(obj, seq(0, 999))
	if n := len(h.broker.Jobs()); n != 1001 {
		t.Errorf("the broker holds %d jobs, want the 1000 indexes and the other user's", n)
	}
}

// TestEnvtestArrayRestartMidway: the manager is stopped while an array
// with parallelism runs, and a new one finishes it: one job per index.
func TestEnvtestArrayRestartMidway(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{AdoptWindow: time.Second})
	h.start()
	spec := arraySpec("0-39", "sleep", "0.05")
	five := int32(5)
	spec.Array.Parallelism = &five
	h.create("mid", spec)
	h.waitFor("mid", 30*time.Second, "some indexes done", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Array != nil && o.Status.Array.Succeeded >= 10
	})
	h.stop()
	h.start()
	obj := h.waitPhase("mid", fluxjobv1.PhaseSucceeded, 60*time.Second)
	h.checkOnePerIndex(obj, seq(0, 39))
}

// TestEnvtestArrayDelete: deleting a running array cancels its jobs and
// releases the object.
func TestEnvtestArrayDelete(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("del", arraySpec("0-3", "sleep", "100"))
	obj := h.waitFor("del", 30*time.Second, "running", func(o *fluxjobv1.FluxJob) bool {
		return o.Status.Array != nil && o.Status.Array.Running == 4
	})
	if err := h.c.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	h.waitGone("del", 30*time.Second)
	byName := h.brokerJobsByName()
	for i := 0; i < 4; i++ {
		ids := byName[jobspec.IndexName(obj, i, 0)]
		if len(ids) != 1 {
			t.Fatalf("index %d: %v", i, ids)
		}
		evs := waitEnded(t, h, ids[0])
		if last := evs[len(evs)-1]; last.Name != job.EventClean {
			t.Errorf("index %d did not end: %v", i, last.Name)
		}
	}
}

// TestEnvtestArrayInvalid: an idset the schema lets through but the
// controller cannot run fails the FluxJob, submitting nothing.
func TestEnvtestArrayInvalid(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("bad", arraySpec(fmt.Sprintf("0-%d", fluxjobv1.MaxArrayIndexes), "true"))
	obj := h.waitPhase("bad", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonInvalidArray)
	if n := len(h.broker.Jobs()); n != 0 {
		t.Errorf("%d jobs submitted", n)
	}
}

// TestEnvtestArrayDependencies: a job after an array (afterok) is held
// until the whole array succeeded; an array after a job gets the job's
// Flux dependency in every index; a job afterok on a failed array fails.
func TestEnvtestArrayDependencies(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	h.create("first", cmdSpec("sleep", "1"))
	after := arraySpec("0-2", "true")
	after.DependsOn = []fluxjobv1.Dependency{{Name: "first"}}
	h.create("arr", after)
	then := cmdSpec("true")
	then.DependsOn = []fluxjobv1.Dependency{{Name: "arr"}}
	h.create("then", then)
	bad := arraySpec("0-1", "false")
	h.create("bad", bad)
	never := cmdSpec("true")
	never.DependsOn = []fluxjobv1.Dependency{{Name: "bad"}}
	h.create("never", never)

	first := h.waitPhase("first", fluxjobv1.PhaseSucceeded, 30*time.Second)
	arr := h.waitPhase("arr", fluxjobv1.PhaseSucceeded, 30*time.Second)
	done := h.waitPhase("then", fluxjobv1.PhaseSucceeded, 30*time.Second)
	// Every index waited for "first" in Flux (its dependency event).
	byName := h.brokerJobsByName()
	for i := 0; i < 3; i++ {
		ids := byName[jobspec.IndexName(arr, i, 0)]
		if len(ids) != 1 {
			t.Fatalf("index %d: %v", i, ids)
		}
		found := false
		for _, ev := range h.brokerEvents(ids[0]) {
			if ev.Name == "dependency-add" && ev.Context["description"] == "after-success="+first.Status.JobIDF58 {
				found = true
			}
		}
		if !found {
			t.Errorf("index %d was not submitted with afterok on %s", i, job.ID(first.Status.JobID).F58())
		}
	}
	// "then" was submitted only after the array had ended.
	if done.Status.SubmitTime == nil || arr.Status.CompletionTime != nil && done.Status.SubmitTime.Before(arr.Status.CompletionTime) {
		t.Errorf("then submitted at %v, before the array ended", done.Status.SubmitTime)
	}
	obj := h.waitPhase("never", fluxjobv1.PhaseFailed, 30*time.Second)
	requireCondition(t, obj, fluxjobv1.ConditionFailed, metav1.ConditionTrue, fluxjobv1.ReasonDependencyFailed)
}

// TestEnvtestArrayStatusPace: an array whose counts change every second
// for about 8 seconds is written at most every arrayStatusPace, plus the
// final write (the writer's own 1 s pace would write about 8 times).
func TestEnvtestArrayStatusPace(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{})
	h.start()
	spec := arraySpec("0-7", "sleep", "1")
	one := int32(1)
	spec.Array.Parallelism = &one
	h.create("paced", spec)
	h.waitPhase("paced", fluxjobv1.PhaseSucceeded, 60*time.Second)
	status, _, phases := h.counts.writesAfter("paced", fluxjobv1.PhaseSucceeded, 5*time.Second)
	t.Logf("8 indexes of 1 s one after another: %d status writes %v", status, phases)
	if status > 4 {
		t.Errorf("%d status writes for an array running ~8 s: want at most one per %s and the final one", status, arrayStatusPace)
	}
}

// TestEnvtestArrayHeldIndexesReachStatus: 2,500 held indexes (urgency 0:
// nothing starts or ends, so no index pokes the reconciler), more than
// arraySubmittingMax, are all submitted and reported active with the
// resync an hour away: something must look again as Flux answers. Both
// arraySubmitWait and the running array's status pace do (the test
// passes with either alone).
func TestEnvtestArrayHeldIndexesReachStatus(t *testing.T) {
	h := newHarness(t, testbroker.Options{}, Options{Resync: time.Hour})
	h.start()
	spec := arraySpec("0-2499", "true")
	zero := int32(0)
	spec.Urgency = &zero
	h.create("held", spec)
	obj := h.waitFor("held", time.Minute, "every index active", func(o *fluxjobv1.FluxJob) bool {
		a := o.Status.Array
		return a != nil && a.Active == 2500 && a.Pending == 0
	})
	if obj.Status.Phase.IsTerminal() {
		t.Fatalf("phase %s: %s", obj.Status.Phase, obj.Status.Message)
	}
}

// TestArrayProgressPace: an array's progress is written every
// arrayStatusPace while it is young, then at a twelfth of its age, at
// most every arrayProgressPaceMax; over a long array that is about the
// logarithm of its duration in writes.
func TestArrayProgressPace(t *testing.T) {
	for _, tc := range []struct {
		age, want time.Duration
	}{
		{0, arrayStatusPace},
		{30 * time.Second, arrayStatusPace},
		{time.Minute, arrayStatusPace},
		{2 * time.Minute, 10 * time.Second},
		{time.Hour, arrayProgressPaceMax},
		{48 * time.Hour, arrayProgressPaceMax},
	} {
		if got := arrayProgressPace(tc.age); got != tc.want {
			t.Errorf("arrayProgressPace(%s) = %s, want %s", tc.age, got, tc.want)
		}
	}
	writes := func(d time.Duration) (n int) {
		for at := time.Duration(0); at < d; at += arrayProgressPace(at) {
			n++
		}
		return n
	}
	if n5, n60 := writes(5*time.Minute), writes(time.Hour); n5 > 40 || n60 > 70 {
		t.Errorf("progress writes: %d over 5 minutes, %d over an hour; want at most 40 and 70", n5, n60)
	}
}

// TestProgressOnly: counts, idsets and the texts that carry them are
// progress; a phase, a condition's status or reason, the urgency or the
// pending reason is not.
func TestProgressOnly(t *testing.T) {
	sixteen, zero := int32(16), int32(0)
	base := fluxjobv1.FluxJobStatus{Phase: fluxjobv1.PhaseRunning, Message: "3 of 10 indexes ended",
		Conditions: []metav1.Condition{{Type: fluxjobv1.ConditionSubmitted, Status: metav1.ConditionTrue, Reason: "Submitted", Message: "3 of 10"}},
		Array:      &fluxjobv1.ArrayStatus{Indexes: 10, Running: 2, Succeeded: 3, SucceededIndexes: "0-2", Urgency: &sixteen},
		Pending:    &fluxjobv1.FluxJobPending{Reason: fluxjobv1.PendingScheduling, Message: "5 of 10 indexes wait"}}
	for _, tc := range []struct {
		name   string
		change func(s *fluxjobv1.FluxJobStatus)
		want   bool
	}{
		{"counts and idsets", func(s *fluxjobv1.FluxJobStatus) {
			s.Array.Succeeded, s.Array.SucceededIndexes, s.Array.Running = 4, "0-3", 1
		}, true},
		{"messages", func(s *fluxjobv1.FluxJobStatus) {
			s.Message, s.Conditions[0].Message, s.Pending.Message = "4 of 10", "4 of 10", "4 of 10 indexes wait"
		}, true},
		{"phase", func(s *fluxjobv1.FluxJobStatus) { s.Phase = fluxjobv1.PhaseSucceeded }, false},
		{"condition reason", func(s *fluxjobv1.FluxJobStatus) { s.Conditions[0].Reason = "Other" }, false},
		{"new condition", func(s *fluxjobv1.FluxJobStatus) {
			s.Conditions = append(s.Conditions, metav1.Condition{Type: fluxjobv1.ConditionFailureTarget, Status: metav1.ConditionTrue})
		}, false},
		{"urgency", func(s *fluxjobv1.FluxJobStatus) { s.Array.Urgency = &zero }, false},
		{"pending reason", func(s *fluxjobv1.FluxJobStatus) { s.Pending.Reason = fluxjobv1.PendingHeld }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			updated := *base.DeepCopy()
			tc.change(&updated)
			if got := progressOnly(base, updated); got != tc.want {
				t.Errorf("progressOnly = %v, want %v", got, tc.want)
			}
		})
	}
}
