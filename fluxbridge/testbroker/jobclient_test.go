package testbroker_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// These tests use fluxbridge/job's RPCs, the client the operator runs,
// against the test broker.

func jobCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func submitCmd(t *testing.T, ctx context.Context, c *flux.Conn, opts job.SubmitOptions, name string, cmd ...string) job.ID {
	t.Helper()
	js, err := job.FromCommand(cmd, job.CommandOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if name != "" {
		js.SetJobName(name)
	}
	id, err := job.SubmitJobspec(ctx, c, js, opts)
	if err != nil {
		t.Fatalf("submit %v: %v", cmd, err)
	}
	return id
}

// watchAll returns every event of id's eventlog, to its end.
func watchAll(t *testing.T, ctx context.Context, c *flux.Conn, id job.ID) []job.Event {
	t.Helper()
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var evs []job.Event
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatalf("watch %s: %v", id, err)
		}
		evs = append(evs, ev)
	}
}

func eventNames(evs []job.Event) string {
	n := make([]string, len(evs))
	for i, e := range evs {
		n[i] = e.Name
	}
	return strings.Join(n, " ")
}

// waitEvent follows id until an event named name.
func waitEvent(t *testing.T, ctx context.Context, c *flux.Conn, id job.ID, name string) {
	t.Helper()
	w, err := job.WatchEvents(ctx, c, id, job.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("watch %s for %s: %v", id, name, err)
		}
		if ev.Name == name {
			return
		}
	}
}

func TestJobClientSubmitWatchWait(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	tests := []struct {
		cmd     []string
		status  job.WaitStatus
		success bool
	}{
		{[]string{"true"}, 0, true},
		{[]string{"false"}, 256, false},
		{[]string{"kill-shell", "SIGKILL"}, 9, false},
	}
	for _, tc := range tests {
		id := submitCmd(t, ctx, c, job.SubmitOptions{Waitable: true}, "", tc.cmd...)
		evs := watchAll(t, ctx, c, id)
		if eventNames(evs) != fullLife {
			t.Fatalf("%v: events %q", tc.cmd, eventNames(evs))
		}
		res, err := job.Wait(ctx, c, id)
		if err != nil {
			t.Fatalf("%v: wait: %v", tc.cmd, err)
		}
		if res.ID != id || res.Success != tc.success {
			t.Errorf("%v: wait = %+v", tc.cmd, res)
		}
		info, err := job.ListID(ctx, c, id, "waitstatus", "result", "state")
		if err != nil {
			t.Fatal(err)
		}
		if info.WaitStatus == nil || *info.WaitStatus != tc.status || info.State != job.StateInactive {
			t.Errorf("%v: list-id = %+v", tc.cmd, info)
		}
	}
	if _, err := job.WaitAny(ctx, c); !errors.Is(err, syscall.ECHILD) {
		t.Fatalf("WaitAny with nothing left: %v", err)
	}
}

func TestJobClientControl(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)

	held := submitCmd(t, ctx, c, job.SubmitOptions{Urgency: job.Urgency(0)}, "held-job", "true")
	waitEvent(t, ctx, c, held, "priority")
	// An unchanged urgency still re-prioritizes, as a real broker does.
	if old, err := job.SetUrgency(ctx, c, held, 0); err != nil || old != 0 {
		t.Fatalf("SetUrgency(0) = %d, %v", old, err)
	}
	old, err := job.SetUrgency(ctx, c, held, 16)
	if err != nil || old != 0 {
		t.Fatalf("SetUrgency = %d, %v", old, err)
	}
	if got := eventNames(watchAll(t, ctx, c, held)); got != "submit validate depend priority urgency priority urgency priority alloc start finish release free clean" {
		t.Fatalf("held job events %q", got)
	}

	killed := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sleep", "300")
	waitEvent(t, ctx, c, killed, "start")
	if _, err := job.SetUrgency(ctx, c, killed, 5); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("urgency of a running job: %v", err)
	}
	if err := job.Kill(ctx, c, killed, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	evs := watchAll(t, ctx, c, killed)
	for _, e := range evs {
		if e.Name == "finish" && e.Context["status"] != float64(36608) {
			t.Fatalf("killed job finish %v", e.Context)
		}
	}

	cancelled := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sleep", "300")
	waitEvent(t, ctx, c, cancelled, "start")
	if err := job.Raise(ctx, c, cancelled, "test", 1, "a note"); err != nil {
		t.Fatal(err)
	}
	if err := job.Cancel(ctx, c, cancelled, ""); err != nil {
		t.Fatal(err)
	}
	if got := eventNames(watchAll(t, ctx, c, cancelled)); got != "submit validate depend priority alloc start exception exception finish release free clean" {
		t.Fatalf("cancelled job events %q", got)
	}
	if err := job.Cancel(ctx, c, cancelled, ""); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("cancel inactive: %v", err)
	}

	jobs, err := job.List(ctx, c, job.ListOptions{Attrs: []string{"name", "result"}, Constraint: job.Name("held-job")})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ID != held || jobs[0].Result != job.ResultCompleted {
		t.Fatalf("list by name: %+v", jobs)
	}
	all, err := job.List(ctx, c, job.ListOptions{Constraint: job.Results(job.ResultCanceled | job.ResultFailed)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != cancelled || all[1].ID != killed {
		t.Fatalf("list by result: %+v", all)
	}
}

func TestJobClientJournal(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	old := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "true")
	watchAll(t, ctx, c, old)

	jw, err := job.WatchJournal(ctx, c, job.JournalOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	defer jw.Close()
	first, err := jw.Next()
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != old || eventNames(first.Events) != fullLife || first.Jobspec == nil || first.R == nil {
		t.Fatalf("backlog entry %+v", first)
	}
	if s, err := jw.Next(); err != nil || !s.Sentinel {
		t.Fatalf("sentinel: %+v, %v", s, err)
	}
	id := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "true")
	var live []string
	for len(live) == 0 || live[len(live)-1] != "clean" {
		e, err := jw.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e.ID != id || len(e.Events) != 1 {
			t.Fatalf("live entry %+v", e)
		}
		name := e.Events[0].Name
		if (name == "submit") != (e.Jobspec != nil) || (name == "alloc") != (e.R != nil) {
			t.Errorf("%s entry: jobspec=%v R=%v", name, e.Jobspec != nil, e.R != nil)
		}
		live = append(live, name)
	}
	want := "submit validate depend priority annotations alloc start finish release free clean"
	if strings.Join(live, " ") != want {
		t.Fatalf("live events %q, want %q", strings.Join(live, " "), want)
	}
}
