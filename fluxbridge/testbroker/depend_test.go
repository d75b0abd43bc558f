package testbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// submitWith submits cmd with the given queue and dependencies.
func submitWith(ctx context.Context, c *flux.Conn, queue string, deps []job.Dependency, cmd ...string) (job.ID, error) {
	js, err := job.FromCommand(cmd, job.CommandOptions{Queue: queue})
	if err != nil {
		return 0, err
	}
	js.Attributes.System.Dependencies = deps
	return job.SubmitJobspec(ctx, c, js, job.SubmitOptions{})
}

// fatalException returns the first exception event of severity sev, or nil.
func fatalException(evs []job.Event, sev int) *job.Event {
	for i := range evs {
		if evs[i].Name == "exception" && fmt.Sprint(evs[i].Context["severity"]) == fmt.Sprint(sev) {
			return &evs[i]
		}
	}
	return nil
}

// TestDependencies runs each after* scheme against a dependency that
// succeeds or fails while the dependant waits, as dependency-after.c
// decides: released (dependency-remove, then the job runs) or a fatal
// "dependency" exception whose note names the description.
func TestDependencies(t *testing.T) {
	tests := []struct {
		scheme  string
		first   string // command of the dependency: true or false
		release bool
		desc    string
	}{
		{"afterok", "true", true, "after-success"},
		{"afterok", "false", false, "after-success"},
		{"afterany", "false", true, "after-finish"},
		{"afternotok", "false", true, "after-failure"},
		{"afternotok", "true", false, "after-failure"},
		{"afterstart", "true", true, "after-start"},
	}
	srv := startServer(t, testbroker.Options{TimeScale: 0.01})
	c := dialFlux(t, srv)
	for _, tc := range tests {
		t.Run(tc.scheme+"-"+tc.first, func(t *testing.T) {
			ctx := jobCtx(t)
			first, err := submitWith(ctx, c, "", nil, "sh", "-c", "sleep 20; "+tc.first) // 200ms
			if err != nil {
				t.Fatal(err)
			}
			second, err := submitWith(ctx, c, "", []job.Dependency{{Scheme: tc.scheme, Value: first.F58()}}, "true")
			if err != nil {
				t.Fatal(err)
			}
			evs := watchAll(t, ctx, c, second)
			names := eventNames(evs)
			wantDesc := tc.desc + "=" + first.F58()
			if evs[1].Name != "dependency-add" || evs[1].Context["description"] != wantDesc {
				t.Fatalf("second event %v, want dependency-add %s (events %s)", evs[1], wantDesc, names)
			}
			exc := fatalException(evs, 0)
			if tc.release {
				if exc != nil || !strings.Contains(names, "dependency-remove") || !strings.Contains(names, "depend priority alloc start finish") {
					t.Fatalf("events %s, want the dependency released and the job run", names)
				}
				return
			}
			if exc == nil || exc.Context["type"] != "dependency" ||
				exc.Context["note"] != "dependency "+wantDesc+" can never be satisfied" || strings.Contains(names, "start") {
				t.Fatalf("events %s (exception %v), want a fatal dependency exception and no start", names, exc)
			}
		})
	}
}

// TestDependencyRefusals: what the job-manager refuses at submission,
// with its errno and message.
func TestDependencyRefusals(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	failed := fluxSubmit(t, c, "false")
	ok := fluxSubmit(t, c, "true")
	watchAll(t, ctx, c, failed)
	watchAll(t, ctx, c, ok)
	tests := []struct {
		dep  job.Dependency
		want string
	}{
		{job.Dependency{Scheme: "afterok", Value: failed.F58()}, "dependency: afterok: job " + failed.F58() + " failed or was canceled"},
		{job.Dependency{Scheme: "afternotok", Value: ok.F58()}, "dependency: afternotok: job " + ok.F58() + " succeeded"},
		{job.Dependency{Scheme: "afterok", Value: "ƒ2222"}, "dependency: afterok: id ƒ2222: job not found"},
		{job.Dependency{Scheme: "afterok", Value: "bogus"}, "dependency: afterok: \"bogus\" is not a valid jobid"},
		{job.Dependency{Scheme: "whenever", Value: "1"}, "dependency scheme \"whenever\" not supported"},
		{job.Dependency{Scheme: "begin-time", Value: "soon"}, "Invalid begin-time=soon"},
	}
	for _, tc := range tests {
		t.Run(tc.dep.Scheme+"-"+tc.dep.Value, func(t *testing.T) {
			_, err := submitWith(ctx, c, "", []job.Dependency{tc.dep}, "true")
			var fe *flux.Error
			if !errors.As(err, &fe) || fe.Errno != syscall.EINVAL || fe.Message != tc.want {
				t.Fatalf("submit error %v, want EINVAL %q", err, tc.want)
			}
		})
	}
	// A satisfied dependency on an inactive job: added and removed at once.
	id, err := submitWith(ctx, c, "", []job.Dependency{{Scheme: "afterany", Value: failed.F58()}}, "true")
	if err != nil {
		t.Fatal(err)
	}
	if names := eventNames(watchAll(t, ctx, c, id)); !strings.HasPrefix(names, "submit dependency-add dependency-remove validate depend") {
		t.Fatalf("events %s", names)
	}
}

// TestBeginTime holds a job until its begin-time, with begin-time.c's
// description.
func TestBeginTime(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialFlux(t, srv)
	ctx := jobCtx(t)
	at := time.Now().Add(300 * time.Millisecond)
	ts := float64(at.UnixNano()) / 1e9
	id, err := submitWith(ctx, c, "", []job.Dependency{{Scheme: "begin-time", Value: fmt.Sprint(ts)}}, "true")
	if err != nil {
		t.Fatal(err)
	}
	evs := watchAll(t, ctx, c, id)
	var removed float64
	for _, ev := range evs {
		if ev.Name == "dependency-remove" {
			removed = ev.Timestamp
			if ev.Context["description"] != fmt.Sprintf("begin-time=%.3f", ts) {
				t.Fatalf("description %v", ev.Context["description"])
			}
		}
	}
	if removed < ts {
		t.Fatalf("dependency removed at %f, before the begin-time %f (events %s)", removed, ts, eventNames(evs))
	}
}

// TestQueues: the queue a job names is checked as a 0.88 instance does,
// with and without configured queues.
func TestQueues(t *testing.T) {
	tests := []struct {
		name   string
		opts   testbroker.Options
		queue  string
		errno  syscall.Errno
		errmsg string
		got    string // queue job-list reports
	}{
		{"anonymous", testbroker.Options{}, "", 0, "", ""},
		{"no-queues-named", testbroker.Options{}, "batch", syscall.EINVAL, "'batch' is not a valid queue", ""},
		{"configured", testbroker.Options{Queues: []string{"batch", "debug"}}, "debug", 0, "", "debug"},
		{"default", testbroker.Options{Queues: []string{"batch", "debug"}, DefaultQueue: "batch"}, "", 0, "", "batch"},
		{"required", testbroker.Options{Queues: []string{"batch"}}, "", syscall.EPERM, "no queue specified", ""},
		{"unknown", testbroker.Options{Queues: []string{"batch"}}, "nope", syscall.EPERM, "Invalid queue 'nope' specified", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.opts)
			c := dialFlux(t, srv)
			ctx := jobCtx(t)
			id, err := submitWith(ctx, c, tc.queue, nil, "true")
			if tc.errno != 0 {
				var fe *flux.Error
				if !errors.As(err, &fe) || fe.Errno != tc.errno || fe.Message != tc.errmsg {
					t.Fatalf("submit error %v, want %v %q", err, tc.errno, tc.errmsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := job.ListID(ctx, c, id, "queue")
			if err != nil {
				t.Fatal(err)
			}
			if info.Queue != tc.got {
				t.Fatalf("queue %q, want %q", info.Queue, tc.got)
			}
		})
	}
}
