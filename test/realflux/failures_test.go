package realflux

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// TestFailureEndings runs failing jobs on flux-core and on the test broker
// and compares how each ends: the exceptions raised (type, severity, note
// with the host replaced) and the finish status. These are the endings a
// FluxJob's failure policy (spec.failurePolicy) matches, so the envtest
// tests that drive the policy through the test broker see what flux-core
// 0.88 emits. The expectations written here were observed on flux-core
// 0.88 (flux start --test-size=1; flux submit ...; flux job eventlog).
func TestFailureEndings(t *testing.T) {
	type scenario struct {
		name string
		cmd  []string
		opts job.CommandOptions
		// act runs once the job started (nil: nothing).
		act     func(t *testing.T, c *flux.Conn, id job.ID)
		held    bool // submitted at urgency 0 and cancelled while pending
		want    []string
		noteCmp bool // compare notes too
	}
	raiseThenKill := func(t *testing.T, c *flux.Conn, id job.ID) {
		if err := job.Raise(ctxT(t), c, id, "mytype", 3, "a note"); err != nil {
			t.Fatal(err)
		}
		if err := job.Kill(ctxT(t), c, id, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	cancel := func(t *testing.T, c *flux.Conn, id job.ID) {
		if err := job.Cancel(ctxT(t), c, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A signal sent before the shell started the tasks ends the job
	// otherwise (flux-core: finish status 15, the shell itself killed, or
	// 0): act waits for the task's first output line.
	running := []string{"sh", "-c", "echo ready; sleep 30"}
	scenarios := []scenario{
		{name: "nonzero exit", cmd: []string{"sh", "-c", "exit 3"}, want: []string{"finish status=768 exit=3"}, noteCmp: true},
		{name: "killed by a signal", cmd: []string{"sh", "-c", "kill -9 $$"}, want: []string{"finish status=35072 exit=137"}, noteCmp: true},
		{name: "time limit", cmd: []string{"sleep", "30"}, opts: job.CommandOptions{Duration: time.Second},
			want: []string{`exception type=timeout severity=0 note="resource allocation expired"`, "finish status=36352 exit=142"}, noteCmp: true},
		{name: "missing binary", cmd: []string{"/nonexistent/binary"},
			want: []string{`exception type=exec severity=0 note="task 0 (host H): start failed: /nonexistent/binary: No such file or directory"`,
				"finish status=32512 exit=127"}, noteCmp: true},
		{name: "cancel running", cmd: running, act: cancel,
			want: []string{`exception type=cancel severity=0 note=""`, "finish status=36608 exit=143"}, noteCmp: true},
		{name: "cancel pending", cmd: []string{"true"}, held: true,
			want: []string{`exception type=cancel severity=0 note=""`, "no finish"}, noteCmp: true},
		{name: "non-fatal exception then SIGTERM", cmd: running, act: raiseThenKill,
			want: []string{`exception type=mytype severity=3 note="a note"`, "finish status=36608 exit=143"}, noteCmp: true},
		// The note is the scheduler's own (sched-simple here, Fluxion
		// words it differently): only type and severity are compared.
		{name: "unsatisfiable", cmd: []string{"true"}, opts: job.CommandOptions{CoresPerTask: 100000},
			want: []string{"exception type=alloc severity=0", "no finish"}},
	}
	obs := map[string][]string{}
	for _, tg := range targets(t) {
		c := dial(t, tg.uri)
		for _, sc := range scenarios {
			opts := sc.opts
			opts.Cwd = "/"
			js, err := job.FromCommand(sc.cmd, opts)
			if err != nil {
				t.Fatal(err)
			}
			so := job.SubmitOptions{}
			if sc.held {
				so.Urgency = job.Urgency(0)
			}
			id, err := job.SubmitJobspec(ctxT(t), c, js, so)
			if err != nil {
				t.Fatalf("%s: %s: %v", tg.name, sc.name, err)
			}
			switch {
			case sc.held:
				events(t, c, id, "priority")
				cancel(t, c, id)
			case sc.act != nil:
				waitOutput(t, c, id)
				sc.act(t, c, id)
			}
			got := endingObs(events(t, c, id, "clean"), sc.noteCmp)
			if tg.real && strings.Join(got, "; ") != strings.Join(sc.want, "; ") {
				t.Errorf("flux-core: %s: %q, want %q", sc.name, got, sc.want)
			}
			for _, o := range got {
				obs[tg.name] = append(obs[tg.name], sc.name+": "+o)
			}
		}
	}
	compare(t, "failure endings", obs)
}

// endingObs is how a job ended: each exception (type, severity, note with
// the host replaced, if notes) and the finish status with its exit code
// as flux job status reports it.
func endingObs(evs []job.Event, notes bool) []string {
	var out []string
	finished := false
	for _, ev := range evs {
		switch ev.Name {
		case job.EventException:
			ec, err := ev.Exception()
			if err != nil {
				out = append(out, "bad exception: "+err.Error())
				continue
			}
			s := fmt.Sprintf("exception type=%s severity=%d", ec.Type, ec.Severity)
			if notes {
				s += fmt.Sprintf(" note=%q", hostRE.ReplaceAllString(ec.Note, "(host H)"))
			}
			out = append(out, s)
		case job.EventFinish:
			ws, _ := job.FinishStatus(ev)
			code := ws.ExitCode()
			if ws.Signaled() {
				code = 128 + ws.Signal()
			}
			out = append(out, fmt.Sprintf("finish status=%d exit=%d", int(ws), code))
			finished = true
		}
	}
	if !finished {
		out = append(out, "no finish")
	}
	return out
}

// waitOutput waits for the job's first line of output: its task runs.
func waitOutput(t *testing.T, c *flux.Conn, id job.ID) {
	t.Helper()
	w, err := job.WatchOutput(ctxT(t), c, id, job.OutputOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if err != nil {
			t.Fatalf("job %s: no output: %v", id, err)
		}
		if ev.Data != nil {
			return
		}
	}
}
