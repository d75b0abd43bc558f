package realflux

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// readOutputObs follows a job's output eventlog to its end and describes
// it: the header, then each stream of each rank in order (data quoted,
// eof), then the shell's log messages; streams are sorted (their order
// against each other depends on the shell's batching).
func readOutputObs(t *testing.T, c *flux.Conn, id job.ID, opts job.OutputOptions) []string {
	t.Helper()
	w, err := job.WatchOutput(ctxT(t), c, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var head, logs []string
	streams := map[string][]string{}
	sentinel := ""
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("output of %s: %v", id, err)
		}
		switch {
		case ev.Sentinel:
			sentinel = fmt.Sprintf("sentinel after %d entries", len(head)+len(logs)+countAll(streams))
		case ev.Header != nil:
			h := ev.Header
			head = append(head, fmt.Sprintf("header version=%d encoding=%v count=%v options=%v", h.Version, h.Encoding, h.Count, h.Options))
		case ev.Data != nil:
			d := ev.Data
			k := d.Stream + "[" + d.Rank + "]"
			if d.Data != nil {
				streams[k] = append(streams[k], fmt.Sprintf("%q", d.Data))
			}
			if d.EOF {
				streams[k] = append(streams[k], "eof")
			}
		case ev.Log != nil:
			l := *ev.Log
			logs = append(logs, fmt.Sprintf("log rank=%d level=%d %s (%s)", l.Rank, l.Level, hostRE.ReplaceAllString(l.Message, "(host H)"), l.File))
		case ev.Redirect != nil:
			logs = append(logs, fmt.Sprintf("redirect %s %s", ev.Redirect.Stream, ev.Redirect.Rank))
		default:
			logs = append(logs, "other "+ev.Name)
		}
	}
	keys := make([]string, 0, len(streams))
	for k := range streams {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := head
	for _, k := range keys {
		out = append(out, k+": "+strings.Join(streams[k], " "))
	}
	out = append(out, logs...)
	if sentinel != "" {
		out = append(out, sentinel)
	}
	return out
}

func countAll(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// TestOutput compares the output eventlog of the same jobs on flux-core
// and on the test broker, as job.WatchOutput decodes it: UTF-8 and binary
// (base64) data, two tasks, a job that prints nothing, a program that does
// not exist (a shell log message and no eof).
func TestOutput(t *testing.T) {
	tgs := targets(t)
	tests := []struct {
		name  string
		cmd   []string
		tasks int
	}{
		{"echo", []string{"echo", "hello"}, 1},
		{"streams and binary", []string{"sh", "-c", `echo out; echo err >&2; printf 'bin\377\n'`}, 1},
		{"two tasks", []string{"echo", "hi"}, 2},
		{"silent", []string{"true"}, 1},
		{"not found", []string{"no-such-program-xyz"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := map[string][]string{}
			for _, tg := range tgs {
				c := dial(t, tg.uri, tg.opts...)
				js, err := job.FromCommand(tc.cmd, job.CommandOptions{Cwd: "/", NumTasks: tc.tasks})
				if err != nil {
					t.Fatal(err)
				}
				id := submit(t, c, js, job.SubmitOptions{})
				obs[tg.name] = readOutputObs(t, c, id, job.OutputOptions{})
				// once the job is clean (before, flux-core's job-info may
				// wait for ever, see job.WatchOutput): the same again, with
				// a sentinel before the end
				events(t, c, id, "clean")
				again := readOutputObs(t, c, id, job.OutputOptions{Sentinel: true})
				if n := len(again); n == 0 || !strings.HasPrefix(again[n-1], "sentinel after") || strings.Join(again[:n-1], "\n") != strings.Join(obs[tg.name], "\n") {
					t.Errorf("%s: reading the finished job's output again: %q, first read %q", tg.name, again, obs[tg.name])
				}
			}
			compare(t, "output of "+strings.Join(tc.cmd, " "), obs)
		})
	}
}

// TestOutputNeverRan: the output watch of a job that never runs (held,
// then cancelled) waits (WAITCREATE) and ends without events.
func TestOutputNeverRan(t *testing.T) {
	obs := map[string][]string{}
	for _, tg := range targets(t) {
		c := dial(t, tg.uri, tg.opts...)
		id := submit(t, c, fromCommand(t, "echo", "x"), job.SubmitOptions{Urgency: job.Urgency(job.UrgencyHold)})
		done := make(chan []string, 1)
		go func() {
			w, err := job.WatchOutput(ctxT(t), c, id, job.OutputOptions{})
			if err != nil {
				done <- []string{"error " + errObs(err)}
				return
			}
			defer w.Close()
			var got []string
			for {
				ev, err := w.Next()
				if err != nil {
					done <- append(got, "end "+errObs(err))
					return
				}
				got = append(got, "event "+ev.Name)
			}
		}()
		events(t, c, id, "priority")
		if err := job.Cancel(ctxT(t), c, id, ""); err != nil {
			t.Fatal(err)
		}
		obs[tg.name] = <-done
	}
	compare(t, "output of a job cancelled before it ran", obs)
}
