package testbroker_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestRestartKinds checks what each kind of restart keeps, as flux-core
// 0.88 does (see testbroker.RestartKind): an inactive job, a job waiting
// for resources, and a running job, restarted under.
func TestRestartKinds(t *testing.T) {
	tests := []struct {
		kind testbroker.RestartKind
		// events of each job after the restart, to its end
		done, pending, running string
	}{
		{testbroker.RestartCrash, fullLife,
			"submit validate depend priority flux-restart priority alloc start finish release free clean",
			"submit validate depend priority alloc start exception release free clean"},
		{testbroker.RestartClean, fullLife,
			"submit validate depend priority flux-restart priority alloc start finish release free clean",
			"submit validate depend priority alloc start exception finish release free clean"},
		{testbroker.RestartFresh, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.kind.String(), func(t *testing.T) {
			srv := startServer(t, testbroker.Options{Cores: 1})
			path := srv.SocketPath()
			c := dialRaw(t, srv)
			done := c.submit(16, 0, "true")
			waitForEvent(t, c, done, "clean")
			running := c.submit(16, 0, "sleep", "300")
			waitForEvent(t, c, running, "start")
			pending := c.submit(16, 0, "true") // waits for the one core
			waitForEvent(t, c, pending, "priority")
			if err := srv.RestartAs(tc.kind); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, c)
			if srv.SocketPath() != path {
				t.Fatalf("socket moved from %s to %s", path, srv.SocketPath())
			}
			c2 := dialRaw(t, srv)
			if tc.kind == testbroker.RestartFresh {
				for _, id := range []uint64{done, running, pending} {
					if m := c2.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"state"}}); m.Errnum() != uint32(syscall.ENOENT) {
						t.Fatalf("job %d after a fresh restart: errno %d %q, want ENOENT", id, m.Errnum(), m.PayloadString())
					}
				}
				if n := len(srv.Jobs()); n != 0 {
					t.Fatalf("a fresh instance has %d jobs", n)
				}
				return
			}
			for _, j := range []struct {
				id   uint64
				want string
			}{{done, tc.done}, {running, tc.running}, {pending, tc.pending}} {
				if got := names(c2.events(j.id)); got != j.want {
					t.Errorf("job %d: events %q, want %q", j.id, got, j.want)
				}
			}
			exc := exceptionOf(c2.events(running))
			wantType, wantNote := "exec", testbroker.ReattachFailedNote
			if tc.kind == testbroker.RestartClean {
				wantType, wantNote = "cancel", ""
			}
			if exc["type"] != wantType || exc["severity"] != float64(0) || exc["note"] != wantNote {
				t.Errorf("running job's exception %v, want type %s severity 0 note %q", exc, wantType, wantNote)
			}
			// IDs continue after the highest one: no reuse.
			if id := c2.submit(16, 0, "true"); id <= pending {
				t.Fatalf("new job ID %d after a restart on the same state, want > %d", id, pending)
			}
		})
	}
}

func exceptionOf(events []map[string]any) map[string]any {
	for _, e := range events {
		if e["name"] == "exception" {
			ctx, _ := e["context"].(map[string]any)
			return ctx
		}
	}
	return nil
}

// TestFreshInstanceReusesIDs: a new instance's FLUID generator starts over,
// so with the same clock it hands out the very IDs of the instance it
// replaced, while a restart on the same state continues after them.
func TestFreshInstanceReusesIDs(t *testing.T) {
	frozen := time.Unix(1_800_000_000, 0)
	srv := startServer(t, testbroker.Options{Now: func() time.Time { return frozen }})
	c := dialRaw(t, srv)
	first := []uint64{c.submit(16, 0, "true"), c.submit(16, 0, "true")}
	if err := srv.RestartAs(testbroker.RestartCrash); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, srv)
	if id := c.submit(16, 0, "true"); id <= first[1] {
		t.Fatalf("after a crash restart: ID %d, want > %d", id, first[1])
	}
	if err := srv.RestartAs(testbroker.RestartFresh); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, srv)
	again := []uint64{c.submit(16, 0, "false"), c.submit(16, 0, "false")}
	if fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("fresh instance IDs %v, want the old instance's %v", again, first)
	}
}

// TestListLag: job-list lists a job ListLag after its submission; list-id
// waits for it instead of failing, as flux-core's idsync does.
func TestListLag(t *testing.T) {
	const lag = 300 * time.Millisecond
	srv := startServer(t, testbroker.Options{ListLag: lag})
	c := dialRaw(t, srv)
	start := time.Now()
	id := c.submit(16, 0, "true")
	list := func() string {
		m := c.rpc("job-list.list", map[string]any{"max_entries": 0, "attrs": []string{"state"}})
		return m.PayloadString()
	}
	if got := list(); got != `{"jobs":[]}` {
		t.Fatalf("job-list right after the submit: %s, want no job yet", got)
	}
	m := c.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"userid"}})
	if m.Errnum() != 0 {
		t.Fatalf("list-id: errno %d %q", m.Errnum(), m.PayloadString())
	}
	if waited := time.Since(start); waited < lag {
		t.Fatalf("list-id answered after %s, before the %s lag", waited, lag)
	}
	if got := list(); got == `{"jobs":[]}` {
		t.Fatal("job-list does not list the job after the lag")
	}
	if m := c.rpc("job-list.list-id", map[string]any{"id": id + 1<<30, "attrs": []string{"state"}}); m.Errnum() != uint32(syscall.ENOENT) {
		t.Fatalf("list-id of an unknown job: errno %d, want ENOENT", m.Errnum())
	}
	srv.SetListLag(0)
	id2 := c.submit(16, 0, "true")
	if m := c.rpc("job-list.list-id", map[string]any{"id": id2, "attrs": []string{"userid"}}); m.Errnum() != 0 {
		t.Fatalf("list-id without lag: errno %d", m.Errnum())
	}
}

// TestPurge: inactive jobs beyond the limits disappear everywhere, oldest
// first; active jobs stay.
func TestPurge(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	var ids []uint64
	for range 5 {
		id := c.submit(16, 0, "true")
		waitForEvent(t, c, id, "clean")
		ids = append(ids, id)
	}
	running := c.submit(16, 0, "sleep", "300")
	waitForEvent(t, c, running, "start")
	if n := srv.PurgeInactive(-1, 2, 100); n != 3 {
		t.Fatalf("purged %d jobs, want 3 (keep the newest 2 inactive)", n)
	}
	for i, id := range ids {
		gone := i < 3
		m := c.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"state"}})
		if got := m.Errnum() == uint32(syscall.ENOENT); got != gone {
			t.Errorf("job %d (%d oldest): list-id errno %d, purged %v", id, i, m.Errnum(), gone)
		}
		w := c.rpc("job-info.lookup", map[string]any{"id": id, "keys": []string{"eventlog"}, "flags": 0})
		if got := w.Errnum() == uint32(syscall.ENOENT); got != gone {
			t.Errorf("job %d: lookup errno %d, purged %v", id, w.Errnum(), gone)
		}
		if _, ok := srv.Eventlog(jobID(id)); ok == gone {
			t.Errorf("job %d: Eventlog found %v, purged %v", id, ok, gone)
		}
	}
	if n := srv.PurgeInactive(0, -1, 100); n != 2 || srv.Purged() != 5 {
		t.Fatalf("age-limit purge: %d, total %d; want 2, 5", n, srv.Purged())
	}
	if jobs := srv.Jobs(); len(jobs) != 1 || uint64(jobs[0]) != running {
		t.Fatalf("jobs after purge %v, want only the running %d", jobs, running)
	}
}

// TestPeriodicPurge: Options.Purge purges at each heartbeat.
func TestPeriodicPurge(t *testing.T) {
	srv := startServer(t, testbroker.Options{Purge: &testbroker.Purge{NumLimit: 1, Period: 20 * time.Millisecond}})
	c := dialRaw(t, srv)
	a := c.submit(16, 0, "true")
	waitForEvent(t, c, a, "clean")
	b := c.submit(16, 0, "true")
	waitForEvent(t, c, b, "clean")
	deadline := time.Now().Add(10 * time.Second)
	for srv.Purged() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("nothing purged within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if jobs := srv.Jobs(); len(jobs) != 1 || uint64(jobs[0]) != b {
		t.Fatalf("jobs %v, want the newest %d", jobs, b)
	}
}

// TestKVSKeepsAcrossRestart: a value committed to the KVS survives a
// restart on the same state, not a fresh instance; guests cannot use it.
func TestKVSKeepsAcrossRestart(t *testing.T) {
	srv := startServer(t, testbroker.Options{AllowGuests: true})
	c := dialRaw(t, srv)
	val := map[string]any{"data": "aGVsbG8=", "type": "val", "ver": 1}
	m := c.rpc("kvs.commit", map[string]any{"namespace": "primary", "flags": 0,
		"ops": []any{map[string]any{"key": "a.b", "flags": 0, "dirent": val}}})
	if m.Errnum() != 0 {
		t.Fatalf("commit: errno %d %q", m.Errnum(), m.PayloadString())
	}
	lookup := func(c *rawClient) (uint32, string) {
		m := c.rpc("kvs.lookup", map[string]any{"key": ".a..b.", "namespace": "primary", "flags": 0})
		return m.Errnum(), m.PayloadString()
	}
	want := `{"val":{"data":"aGVsbG8=","type":"val","ver":1}}`
	if e, p := lookup(c); e != 0 || p != want {
		t.Fatalf("lookup: %d %q, want %q", e, p, want)
	}
	if err := srv.RestartAs(testbroker.RestartCrash); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, srv)
	if e, p := lookup(c); e != 0 || p != want {
		t.Fatalf("lookup after a crash restart: %d %q", e, p)
	}
	if err := srv.RestartAs(testbroker.RestartFresh); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, srv)
	if e, _ := lookup(c); e != uint32(syscall.ENOENT) {
		t.Fatalf("lookup in a fresh instance: errno %d, want ENOENT", e)
	}
	if n := srv.RequestCount("kvs.lookup"); n != 3 {
		t.Fatalf("RequestCount(kvs.lookup) = %d, want 3", n)
	}
}

func jobID(id uint64) job.ID { return job.ID(id) }
