package testbroker_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

func TestWatchWaitCreateAndSentinel(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	// WAITCREATE on an ID that does not exist yet waits; a plain watch is
	// ENOENT at once.
	m := c.streamUntilEnd("job-info.eventlog-watch", map[string]any{"id": 99, "path": "eventlog", "flags": 0}, 5*time.Second)
	if len(m) != 1 || m[0].Errnum() != uint32(syscall.ENOENT) || m[0].Flags&wire.FlagPayload != 0 {
		t.Fatalf("watch of unknown job: %v", m)
	}
	waiting := c.request("job-info.eventlog-watch", map[string]any{"id": 99, "path": "eventlog", "flags": 1}, wire.FlagStreaming)
	c.request("job-info.eventlog-watch-cancel", map[string]any{"matchtag": waiting}, wire.FlagNoResponse)
	end := c.wait(waiting, 1, 5*time.Second)[0]
	if end.Errnum() != uint32(syscall.ENODATA) {
		t.Fatalf("cancelled WAITCREATE watch ended with %d", end.Errnum())
	}

	// INITIAL_SENTINEL: an empty response once the existing events are out.
	id := c.submit(16, 0, "sleep", "300")
	waitForEvent(t, c, id, "start")
	tag := c.request("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 2}, wire.FlagStreaming)
	msgs := c.wait(tag, 7, 5*time.Second)
	if s := msgs[6]; s.Errnum() != 0 || s.Flags&wire.FlagPayload != 0 {
		t.Fatalf("7th response %s, want the empty sentinel after 6 events", s)
	}
	for _, m := range msgs[:6] {
		if m.Flags&wire.FlagPayload == 0 {
			t.Fatalf("event response without payload before the sentinel: %s", m)
		}
	}
	if m := c.rpc("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 4}); m.Errnum() != uint32(syscall.EPROTO) ||
		m.PayloadString() != "eventlog-watch request rejected with invalid flag" {
		t.Fatalf("bad flag: %d %q", m.Errnum(), m.PayloadString())
	}
}

func TestWaitResults(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	tests := []struct {
		command []string
		cancel  bool
		success bool
		errstr  string
	}{
		{[]string{"true"}, false, true, ""},
		{[]string{"false"}, false, false, "task(s) exited with exit code 1"},
		{[]string{"kill-self", "TERM"}, false, false, "task(s) Terminated"},
		{[]string{"kill-shell", "KILL"}, false, false, "job shell Killed"},
		{[]string{"sleep", "300"}, true, false, "Fatal exception type=cancel "},
	}
	for _, tc := range tests {
		id := c.submit(16, 4, tc.command...)
		if tc.cancel {
			waitForEvent(t, c, id, "start")
			c.rpc("job-manager.raise", map[string]any{"id": id, "type": "cancel", "severity": 0})
		}
		m := c.rpc("job-manager.wait", map[string]any{"id": id})
		var p struct {
			ID      uint64
			Success bool
			Errstr  string
		}
		if err := m.DecodeJSON(&p); err != nil {
			t.Fatalf("%v: %d %q", tc.command, m.Errnum(), m.PayloadString())
		}
		if p.ID != id || p.Success != tc.success || p.Errstr != tc.errstr {
			t.Errorf("%v: wait = %+v, want success=%v errstr=%q", tc.command, p, tc.success, tc.errstr)
		}
	}
	notWaitable := c.submit(16, 0, "true")
	if m := c.rpc("job-manager.wait", map[string]any{"id": notWaitable}); m.Errnum() != uint32(syscall.ECHILD) {
		t.Errorf("wait on a job not waitable: %d %q", m.Errnum(), m.PayloadString())
	}
}

func TestRealisticDelays(t *testing.T) {
	srv := startServer(t, testbroker.Options{Delays: testbroker.RealisticDelays()})
	c := dialRaw(t, srv)
	id := c.submit(16, 0, "true")
	ev := c.events(id)
	if names(ev) != fullLife {
		t.Fatalf("events %q", names(ev))
	}
	ts := func(i int) float64 { return ev[i]["timestamp"].(float64) }
	d := testbroker.RealisticDelays()
	if gap := ts(1) - ts(0); gap < d.Validate.Seconds()*0.9 {
		t.Errorf("submit -> validate took %.4fs, want at least %v", gap, d.Validate)
	}
	if gap := ts(6) - ts(5); gap < d.Run.Seconds()*0.9 {
		t.Errorf("start -> finish took %.4fs, want at least %v", gap, d.Run)
	}
}
