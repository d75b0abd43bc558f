package testbroker_test

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// outputLine is one output event, flattened for comparison.
type outputLine struct {
	name, stream, rank, data string
	eof                      bool
}

func flatten(ev job.OutputEvent) outputLine {
	l := outputLine{name: ev.Name}
	if d := ev.Data; d != nil {
		l.stream, l.rank, l.data, l.eof = d.Stream, d.Rank, string(d.Data), d.EOF
	}
	return l
}

// readOutput reads w to its end.
func readOutput(t *testing.T, w *job.OutputWatch) []outputLine {
	t.Helper()
	var out []outputLine
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("output: %v (after %v)", err, out)
		}
		if ev.Name == job.OutputHeaderEvent && (ev.Header == nil || ev.Header.Version != 1) {
			t.Fatalf("header %+v", ev.Header)
		}
		out = append(out, flatten(ev))
	}
}

func eofs(ranks ...string) []outputLine {
	var out []outputLine
	for _, r := range ranks {
		out = append(out, outputLine{name: "data", stream: "stdout", rank: r, eof: true}, outputLine{name: "data", stream: "stderr", rank: r, eof: true})
	}
	return out
}

func TestOutputEventlog(t *testing.T) {
	srv := startServer(t, testbroker.Options{TimeScale: 0.001})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	header := outputLine{name: "header"}
	tests := []struct {
		name  string
		cmd   []string
		tasks int
		want  []outputLine
	}{
		{"echo", []string{"echo", "hello"}, 1, append([]outputLine{header, {"data", "stdout", "0", "hello\n", false}}, eofs("0")...)},
		{"no output", []string{"true"}, 1, append([]outputLine{header}, eofs("0")...)},
		{"two tasks", []string{"sh", "-c", "echo out; echo err >&2"}, 2, append([]outputLine{header,
			{"data", "stdout", "0", "out\n", false}, {"data", "stdout", "1", "out\n", false},
			{"data", "stderr", "0", "err\n", false}, {"data", "stderr", "1", "err\n", false}}, eofs("0", "1")...)},
		{"binary", []string{"printf", `\xff\x00bin\n`}, 1, append([]outputLine{header, {"data", "stdout", "0", "\xff\x00bin\n", false}}, eofs("0")...)},
		{"not found", []string{"no-such-program"}, 1, []outputLine{header, {name: "log"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js, err := job.FromCommand(tc.cmd, job.CommandOptions{NumTasks: tc.tasks})
			if err != nil {
				t.Fatal(err)
			}
			id, err := job.SubmitJobspec(ctx, c, js, job.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			w, err := job.WatchOutput(ctx, c, id, job.OutputOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			got := readOutput(t, w)
			if len(got) != len(tc.want) {
				t.Fatalf("output %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("output %+v, want %+v", got, tc.want)
				}
			}
			// once complete, a new watch replays it and ends
			w2, err := job.WatchOutput(ctx, c, id, job.OutputOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w2.Close()
			if again := readOutput(t, w2); len(again) != len(got) {
				t.Fatalf("replay %+v, want %+v", again, got)
			}
		})
	}
}

// TestOutputFollow reads a running job's output as it is written: the
// first line arrives while the job still runs (it is still in RUN when the
// line is read), the second after its sleep.
func TestOutputFollow(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	id := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sh", "-c", "echo first; sleep 0.5; echo second")
	w, err := job.WatchOutput(ctx, c, id, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next := func() outputLine {
		t.Helper()
		ev, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		return flatten(ev)
	}
	if l := next(); l.name != "header" {
		t.Fatalf("first event %+v", l)
	}
	if l := next(); l.data != "first\n" {
		t.Fatalf("second event %+v", l)
	}
	info, err := job.ListID(ctx, c, id, "state")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != job.StateRun {
		t.Fatalf("state after the first line: %v, want RUN", info.State)
	}
	if l := next(); l.data != "second\n" {
		t.Fatalf("third event %+v", l)
	}
	rest := readOutput(t, w)
	if len(rest) != 2 || !rest[0].eof || !rest[1].eof {
		t.Fatalf("end %+v", rest)
	}
}

// TestOutputKilled: a cancelled job wrote only what was due; its streams
// still end with eof.
func TestOutputKilled(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	id := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sh", "-c", "echo before; sleep inf; echo after")
	w, err := job.WatchOutput(ctx, c, id, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Data != nil && string(ev.Data.Data) == "before\n" {
			break
		}
	}
	if err := job.Cancel(ctx, c, id, ""); err != nil {
		t.Fatal(err)
	}
	rest := readOutput(t, w)
	if want := eofs("0"); len(rest) != 2 || rest[0] != want[0] || rest[1] != want[1] {
		t.Fatalf("after cancel %+v", rest)
	}
}

// TestOutputNeverStarted: the watch of a job that has not started waits;
// when the job ends without starting, it ends without events.
func TestOutputNeverStarted(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	id := submitCmd(t, ctx, c, job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)}, "", "echo", "x")
	got := make(chan []outputLine, 1)
	var evs []job.OutputEvent
	done := make(chan error, 1)
	cancel, err := job.StartWatchOutput(ctx, c, id, job.OutputOptions{}, func(ev job.OutputEvent, err error) {
		if err != nil {
			done <- err
			return
		}
		evs = append(evs, ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	waitEvent(t, ctx, c, id, "priority")
	if err := job.Cancel(ctx, c, id, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("end %v", err)
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	close(got)
	if len(evs) != 0 {
		t.Fatalf("events of a job that never ran: %+v", evs)
	}
}

func TestOutputErrors(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	w, err := job.WatchOutput(ctx, c, 12345, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("unknown job: %v, want ENOENT", err)
	}
	w.Close()

	// Close ends a watch that waits
	id := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sleep", "inf")
	t.Cleanup(func() { _ = job.Cancel(context.Background(), c, id, "") })
	w, err = job.WatchOutput(ctx, c, id, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Next(); err != nil || ev.Name != "header" {
		t.Fatalf("first: %+v %v", ev, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(); !errors.Is(err, flux.ErrStreamClosed) {
		t.Fatalf("after close: %v, want ErrStreamClosed", err)
	}
}

// TestOutputSentinel: with OutputOptions.Sentinel the watch marks the end
// of what was written when it started: after the first line of a job that
// still runs, after everything of a finished one (then the end).
func TestOutputSentinel(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	untilSentinel := func(id job.ID) (lines []outputLine, w *job.OutputWatch) {
		t.Helper()
		w, err := job.WatchOutput(ctx, c, id, job.OutputOptions{Sentinel: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		for {
			ev, err := w.Next()
			if err != nil {
				t.Fatalf("before the sentinel: %v (after %+v)", err, lines)
			}
			if ev.Sentinel {
				return lines, w
			}
			lines = append(lines, flatten(ev))
		}
	}
	running := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "sh", "-c", "echo first; sleep inf")
	t.Cleanup(func() { _ = job.Cancel(context.Background(), c, running, "") })
	// wait until the first line is there, then a new watch's sentinel
	// comes after it
	w, err := job.WatchOutput(ctx, c, running, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Data != nil {
			break
		}
	}
	w.Close()
	if lines, _ := untilSentinel(running); len(lines) != 2 || lines[1].data != "first\n" {
		t.Fatalf("running job before the sentinel: %+v", lines)
	}

	done := submitCmd(t, ctx, c, job.SubmitOptions{}, "", "echo", "x")
	waitEvent(t, ctx, c, done, "clean")
	lines, w2 := untilSentinel(done)
	if len(lines) != 4 {
		t.Fatalf("finished job before the sentinel: %+v", lines)
	}
	if _, err := w2.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the sentinel of a finished job: %v, want EOF", err)
	}
}
