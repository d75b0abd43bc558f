package controllers

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

const t0 = 1700000000.25 // an eventlog timestamp

func ev(name string, dt float64, ctx map[string]any) job.Event {
	return job.Event{Name: name, Timestamp: t0 + dt, Context: ctx}
}

// lifecycle returns the events of a job up to and including the named one.
func lifecycle(upto string) []job.Event {
	all := []job.Event{
		ev("submit", 0, map[string]any{"userid": 1000.0, "urgency": 16.0, "flags": 0.0, "version": 1.0}),
		ev("validate", 0.01, nil),
		ev("depend", 0.02, nil),
		ev("priority", 0.02, map[string]any{"priority": 16.0}),
		ev("alloc", 0.03, nil),
		ev("start", 1.5, nil),
	}
	var out []job.Event
	for _, e := range all {
		out = append(out, e)
		if e.Name == upto {
			break
		}
	}
	return out
}

func withEvents(evs []job.Event, more ...job.Event) []job.Event {
	return append(append([]job.Event(nil), evs...), more...)
}

func newObj() *fluxjobv1.FluxJob {
	return &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "u", Generation: 1}}
}

func cond(st fluxjobv1.FluxJobStatus, typ string) string {
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		return "absent"
	}
	return string(c.Status) + "/" + c.Reason
}

func TestComputeStatus(t *testing.T) {
	const id = 1234567890
	f58 := job.ID(id).F58()
	finished := func(status float64, extra ...job.Event) *broker.View {
		evs := withEvents(lifecycle("start"), extra...)
		evs = append(evs, ev("finish", 3.75, map[string]any{"status": status}), ev("release", 3.8, nil), ev("clean", 3.9, nil))
		return &broker.View{JobID: id, HasJobID: true, Events: evs, Outcome: broker.Outcome{Kind: broker.OutcomeExited}}
	}
	cancelExc := ev("exception", 2, map[string]any{"type": "cancel", "severity": 0.0, "note": "deleted", "userid": 1000.0})
	tests := []struct {
		name        string
		marker      bool
		in          statusInput
		phase       fluxjobv1.FluxJobPhase
		exit        *int32
		conds       map[string]string
		msgContains string
		check       func(t *testing.T, st fluxjobv1.FluxJobStatus)
	}{
		{
			name:  "new object",
			phase: fluxjobv1.PhasePending,
			conds: map[string]string{"Submitted": "False/Pending", "Ready": "False/InProgress", "Reconciling": "True/InProgress", "Stalled": "absent", "Failed": "False/InProgress", "FluxReachable": "absent"},
		},
		{
			name:   "submitting marker",
			marker: true,
			in:     statusInput{Reachable: true},
			phase:  fluxjobv1.PhasePending,
			conds:  map[string]string{"Submitted": "Unknown/Submitting", "FluxReachable": "True/FluxReachable"},
		},
		{
			name:  "job ID known",
			in:    statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Events: lifecycle("priority")}},
			phase: fluxjobv1.PhaseSubmitted,
			conds: map[string]string{"Submitted": "True/Submitted", "Running": "False/Submitted", "Reconciling": "True/InProgress"},
			check: func(t *testing.T, st fluxjobv1.FluxJobStatus) {
				if st.JobID != id || st.JobIDF58 != f58 {
					t.Errorf("jobID = %d %q, want %d %q", st.JobID, st.JobIDF58, id, f58)
				}
				if st.SubmitTime == nil || st.SubmitTime.Unix() != 1700000000 {
					t.Errorf("submitTime = %v", st.SubmitTime)
				}
				if st.Urgency == nil || *st.Urgency != 16 {
					t.Errorf("urgency = %v, want 16", st.Urgency)
				}
				if len(st.Events) != 4 || st.Events[3].Name != "priority" || st.Events[3].Context != `{"priority":16}` {
					t.Errorf("events = %+v", st.Events)
				}
			},
		},
		{
			name:  "running",
			in:    statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Events: lifecycle("start")}},
			phase: fluxjobv1.PhaseRunning,
			conds: map[string]string{"Running": "True/Started", "Succeeded": "False/InProgress"},
		},
		{
			name:  "exit 0",
			in:    statusInput{Obs: finished(0)},
			phase: fluxjobv1.PhaseSucceeded,
			exit:  int32Ptr(0),
			conds: map[string]string{"Succeeded": "True/Completed", "Ready": "True/Completed", "Reconciling": "absent", "Stalled": "absent", "Failed": "False/InProgress", "Running": "False/Completed"},
			check: func(t *testing.T, st fluxjobv1.FluxJobStatus) {
				if st.Duration == nil || st.Duration.Duration != 2250*time.Millisecond {
					t.Errorf("duration = %v, want 2.25s", st.Duration)
				}
				if st.StartTime == nil || st.CompletionTime == nil || st.CompletionTime.Unix() != 1700000004 {
					t.Errorf("times = %v %v", st.StartTime, st.CompletionTime)
				}
			},
		},
		{
			name:        "exit 1",
			in:          statusInput{Obs: finished(256)},
			phase:       fluxjobv1.PhaseFailed,
			exit:        int32Ptr(1),
			conds:       map[string]string{"Failed": "True/NonZeroExit", "Stalled": "True/NonZeroExit", "Ready": "False/NonZeroExit"},
			msgContains: "exited with code 1",
		},
		{
			name:        "signalled",
			in:          statusInput{Obs: finished(9)},
			phase:       fluxjobv1.PhaseFailed,
			exit:        int32Ptr(-9),
			conds:       map[string]string{"Failed": "True/Signaled"},
			msgContains: "signal 9",
		},
		{
			name:        "cancelled while running",
			in:          statusInput{Obs: finished(36608, cancelExc)},
			phase:       fluxjobv1.PhaseCancelled,
			exit:        int32Ptr(143),
			conds:       map[string]string{"Failed": "True/Cancelled", "Stalled": "True/Cancelled", "Succeeded": "False/Cancelled"},
			msgContains: "exception cancel: deleted",
			check: func(t *testing.T, st fluxjobv1.FluxJobStatus) {
				if st.Exception == nil || st.Exception.Type != "cancel" || st.Exception.Note != "deleted" {
					t.Errorf("exception = %+v", st.Exception)
				}
			},
		},
		{
			name:        "fatal exception, finish not yet posted",
			in:          statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Events: withEvents(lifecycle("start"), cancelExc), Outcome: broker.Outcome{Kind: broker.OutcomeException}}},
			phase:       fluxjobv1.PhaseRunning,
			msgContains: "exception cancel raised",
		},
		{
			name:  "cancelled while pending",
			in:    statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Events: withEvents(lifecycle("priority"), cancelExc, ev("clean", 2.1, nil))}},
			phase: fluxjobv1.PhaseCancelled,
			conds: map[string]string{"Failed": "True/Cancelled", "Running": "False/Cancelled"},
			check: func(t *testing.T, st fluxjobv1.FluxJobStatus) {
				if st.ExitStatus != nil || st.Duration != nil {
					t.Errorf("exit %v duration %v for a job that never ran", st.ExitStatus, st.Duration)
				}
			},
		},
		{
			name: "command not found",
			in: statusInput{Obs: finished(32512, ev("exception", 1.6, map[string]any{
				"type": "exec", "severity": 0.0, "note": "task 0 (host testbroker): start failed: nope: No such file or directory"}))},
			phase:       fluxjobv1.PhaseFailed,
			exit:        int32Ptr(127),
			conds:       map[string]string{"Failed": "True/Exception"},
			msgContains: "No such file or directory",
		},
		{
			name:        "non-fatal exception is ignored",
			in:          statusInput{Obs: finished(0, ev("exception", 2, map[string]any{"type": "test", "severity": 1.0}))},
			phase:       fluxjobv1.PhaseSucceeded,
			exit:        int32Ptr(0),
			conds:       map[string]string{"Succeeded": "True/Completed"},
			msgContains: "completed",
		},
		{
			name:        "broker rejected the jobspec",
			in:          statusInput{Obs: &broker.View{Outcome: broker.Outcome{Kind: broker.OutcomeInvalidJobspec, Message: "Missing key (tasks)"}}},
			phase:       fluxjobv1.PhaseFailed,
			conds:       map[string]string{"Submitted": "False/InvalidJobspec", "Failed": "True/InvalidJobspec", "Stalled": "True/InvalidJobspec", "Reconciling": "absent"},
			msgContains: "Flux rejected the jobspec: Missing key (tasks)",
		},
		{
			name:        "job not found",
			in:          statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Outcome: broker.Outcome{Kind: broker.OutcomeNoSuchJob, Message: "job ID does not match any job"}}},
			phase:       fluxjobv1.PhaseFailed,
			conds:       map[string]string{"Submitted": "True/Submitted", "Failed": "True/JobNotFound"},
			msgContains: "not found",
		},
		{
			name:        "connection lost is not a failure",
			in:          statusInput{Obs: &broker.View{JobID: id, HasJobID: true, Events: lifecycle("start"), Outcome: broker.Outcome{Kind: broker.OutcomeLost, Message: "EOF"}}, Unreachable: "connection lost"},
			phase:       fluxjobv1.PhaseRunning,
			conds:       map[string]string{"FluxReachable": "False/FluxUnreachable", "Failed": "False/InProgress", "Stalled": "absent"},
			msgContains: "running",
		},
		{
			name:        "namespace not allowed",
			in:          statusInput{Failure: &failure{Reason: fluxjobv1.ReasonNamespaceNotAllowed, Message: `namespace "ns" may not run Flux jobs`}},
			phase:       fluxjobv1.PhaseFailed,
			conds:       map[string]string{"Submitted": "False/NamespaceNotAllowed", "Stalled": "True/NamespaceNotAllowed", "Ready": "False/NamespaceNotAllowed"},
			msgContains: "may not run",
		},
	}
	now := time.Unix(1700000100, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := newObj()
			if tc.marker {
				mt := fluxjobv1.NewPreciseTime(now.Add(-time.Second))
				obj.Status.SubmitAttemptTime = &mt
			}
			st := computeStatus(obj, tc.in, now)
			if st.Phase != tc.phase {
				t.Errorf("phase = %s, want %s (message %q)", st.Phase, tc.phase, st.Message)
			}
			if st.ObservedGeneration != 1 {
				t.Errorf("observedGeneration = %d", st.ObservedGeneration)
			}
			for _, c := range st.Conditions {
				if c.ObservedGeneration != 1 {
					t.Errorf("condition %s observedGeneration = %d", c.Type, c.ObservedGeneration)
				}
			}
			if (tc.exit == nil) != (st.ExitStatus == nil) || tc.exit != nil && *tc.exit != *st.ExitStatus {
				t.Errorf("exitStatus = %v, want %v", ptrStr(st.ExitStatus), ptrStr(tc.exit))
			}
			for typ, want := range tc.conds {
				if got := cond(st, typ); got != want {
					t.Errorf("condition %s = %s, want %s", typ, got, want)
				}
			}
			if !strings.Contains(st.Message, tc.msgContains) {
				t.Errorf("message %q does not contain %q", st.Message, tc.msgContains)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
}

func ptrStr(p *int32) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestComputeStatusStable checks that recomputing a status that went
// through the API server (JSON, second-precision times) gives an equal
// status, so the reconciler does not patch in a loop.
func TestComputeStatusStable(t *testing.T) {
	obs := &broker.View{JobID: 99, HasJobID: true, Events: withEvents(lifecycle("start"),
		ev("finish", 3.123456789, map[string]any{"status": 0.0}))}
	for _, in := range []statusInput{
		{},
		{Reachable: true, Obs: &broker.View{JobID: 99, HasJobID: true, Events: lifecycle("start")}},
		{Reachable: true, Obs: obs},
	} {
		obj := newObj()
		st := computeStatus(obj, in, time.Unix(1700000100, 500))
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var back fluxjobv1.FluxJobStatus
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		obj.Status = back
		again := computeStatus(obj, in, time.Unix(1700000200, 0))
		if !equality.Semantic.DeepEqual(back, again) {
			a, _ := json.Marshal(again)
			t.Errorf("status not stable:\nfirst  %s\nsecond %s", b, a)
		}
	}
}

func TestComputeStatusTerminalIsFinal(t *testing.T) {
	obj := newObj()
	obj.Status = computeStatus(obj, statusInput{Obs: &broker.View{JobID: 5, HasJobID: true,
		Events: withEvents(lifecycle("start"), ev("finish", 2, map[string]any{"status": 0.0}))}}, time.Unix(1700000100, 0))
	if obj.Status.Phase != fluxjobv1.PhaseSucceeded {
		t.Fatalf("phase %s", obj.Status.Phase)
	}
	before := obj.Status.DeepCopy()
	obj.Generation = 2
	st := computeStatus(obj, statusInput{Unreachable: "gone", Obs: &broker.View{Outcome: broker.Outcome{Kind: broker.OutcomeNoSuchJob}}}, time.Unix(1700000200, 0))
	if st.Phase != fluxjobv1.PhaseSucceeded || st.ObservedGeneration != 2 || cond(st, "FluxReachable") != "absent" {
		t.Fatalf("terminal status changed: %+v", st)
	}
	st.ObservedGeneration = 1
	for i := range st.Conditions {
		st.Conditions[i].ObservedGeneration = 1
	}
	if !equality.Semantic.DeepEqual(*before, st) {
		t.Fatal("terminal status changed beyond observedGeneration")
	}
}

func TestStatusEventsBounded(t *testing.T) {
	var evs []job.Event
	for i := 0; i < 40; i++ {
		evs = append(evs, ev("urgency", float64(i), map[string]any{"note": strings.Repeat("é", 300)}))
	}
	out := statusEvents(evs)
	if len(out) != fluxjobv1.MaxStatusEvents {
		t.Fatalf("%d events, want %d", len(out), fluxjobv1.MaxStatusEvents)
	}
	if got := out[0].Time.Unix(); got != 1700000008 {
		t.Errorf("oldest kept event at %d, want the 9th", got)
	}
	for _, e := range out {
		if len(e.Context) > fluxjobv1.MaxEventContextLength || !strings.HasSuffix(e.Context, "...") {
			t.Fatalf("context not clipped: %d bytes", len(e.Context))
		}
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 8, "abcde..."},
		{"ééééé", 8, "éé..."}, // never splits a rune: é is 2 bytes
		{"abc", 2, "..."},
	}
	for _, tc := range tests {
		if got := fluxjobv1.Clip(tc.in, tc.max); got != tc.want {
			t.Errorf("fluxjobv1.Clip(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestSignificantChange(t *testing.T) {
	obj := newObj()
	obs := &broker.View{JobID: 7, HasJobID: true, Events: lifecycle("submit")}
	obj.Status = computeStatus(obj, statusInput{Reachable: true, Obs: obs}, time.Unix(1700000100, 0))
	more := &broker.View{JobID: 7, HasJobID: true, Events: lifecycle("alloc")}
	if st := computeStatus(obj, statusInput{Reachable: true, Obs: more}, time.Unix(1700000101, 0)); significantChange(obj.Status, st) {
		t.Fatal("events that keep the phase count as a significant change")
	}
	running := &broker.View{JobID: 7, HasJobID: true, Events: lifecycle("start")}
	if st := computeStatus(obj, statusInput{Reachable: true, Obs: running}, time.Unix(1700000101, 0)); !significantChange(obj.Status, st) {
		t.Fatal("the start of the job is not a significant change")
	}
	if st := computeStatus(obj, statusInput{Unreachable: "gone", Obs: more}, time.Unix(1700000101, 0)); !significantChange(obj.Status, st) {
		t.Fatal("losing the broker is not a significant change")
	}
}

// TestComputeStatusReplayDoesNotRegress: after a restart the eventlog
// replays from the start; a partial replay must not move the phase back or
// shorten the events.
func TestComputeStatusReplayDoesNotRegress(t *testing.T) {
	obj := newObj()
	now := time.Unix(1700000100, 0)
	obj.Status = computeStatus(obj, statusInput{Reachable: true, Obs: &broker.View{JobID: 7, HasJobID: true, Events: lifecycle("start")}}, now)
	if obj.Status.Phase != fluxjobv1.PhaseRunning {
		t.Fatalf("phase %s", obj.Status.Phase)
	}
	for _, upto := range []string{"", "submit", "alloc"} {
		var evs []job.Event
		if upto != "" {
			evs = lifecycle(upto)
		}
		st := computeStatus(obj, statusInput{Reachable: true, Obs: &broker.View{JobID: 7, HasJobID: true, Events: evs}}, now)
		if st.Phase != fluxjobv1.PhaseRunning || len(st.Events) != 6 || significantChange(obj.Status, st) {
			t.Fatalf("replay up to %q: phase %s, %d events, significant=%v", upto, st.Phase, len(st.Events), significantChange(obj.Status, st))
		}
	}
}
