package testbroker_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// The owner's credentials pass through (src/common/librouter/auth.c), so
// an owner connection can act as a guest, as flux-core's own tests do.
// A guest may not touch another user's job, nor, in private mode, see it.
func TestGuestCannotTouchOthersJobs(t *testing.T) {
	srv := startServer(t, testbroker.Options{PrivateMode: true})
	owner := dialRaw(t, srv)
	id := owner.submit(16, 0, "sleep", "300")
	waitForEvent(t, owner, id, "start")

	guest := dialRaw(t, srv)
	guest.rewrite = func(m *wire.Message) {
		m.UserID = myUID() + 4242
		m.Rolemask = 2 // USER
	}
	tests := []struct {
		topic   string
		payload any
		flags   wire.Flags
		errno   syscall.Errno
		text    string
	}{
		{"job-manager.raise", map[string]any{"id": id, "type": "cancel", "severity": 0}, 0, syscall.EPERM, "guests can only raise exceptions on their own jobs"},
		{"job-manager.kill", map[string]any{"id": id, "signum": 9}, 0, syscall.EPERM, "guests may only send signals to their own jobs"},
		{"job-manager.urgency", map[string]any{"id": id, "urgency": 1}, 0, syscall.EPERM, "guests can only reprioritize their own jobs"},
		{"job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0}, wire.FlagStreaming, syscall.EPERM, ""},
		{"job-info.lookup", map[string]any{"id": id, "keys": []string{"eventlog"}, "flags": 0}, 0, syscall.EPERM, "access is restricted to job/instance owner"},
		{"job-list.list-id", map[string]any{"id": id, "attrs": []string{}}, 0, syscall.ENOENT, ""},
		{"job-list.list", map[string]any{"max_entries": 0, "attrs": []string{}}, wire.FlagStreaming, syscall.ENODATA, ""},
		{"job-manager.getinfo", nil, 0, syscall.EPERM, ""},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			tag := guest.request(tc.topic, tc.payload, tc.flags)
			m := guest.wait(tag, 1, 5*time.Second)[0]
			if m.Errnum() != uint32(tc.errno) || m.PayloadString() != tc.text {
				t.Fatalf("got %d %q, want %d %q", m.Errnum(), m.PayloadString(), tc.errno, tc.text)
			}
			if m.UserID != myUID()+4242 || m.Rolemask != 2 {
				t.Errorf("response creds %d/%d", m.UserID, m.Rolemask)
			}
		})
	}
}

// Outside private mode (flux-core's default) a guest sees every user's
// jobs in job-list and may ask job-manager.getinfo; it still may not touch
// another's job.
func TestGuestSeesOthersJobsOutsidePrivateMode(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	owner := dialRaw(t, srv)
	id := owner.submit(0, 0, "true") // held: stays active
	guest := dialRaw(t, srv)
	guest.rewrite = func(m *wire.Message) {
		m.UserID = myUID() + 4242
		m.Rolemask = 2 // USER
	}
	if m := guest.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"userid"}}); m.Errnum() != 0 {
		t.Errorf("list-id of the owner's job: %d %q", m.Errnum(), m.PayloadString())
	}
	if ids, errm := guest.list(nil); errm != nil || len(ids) != 1 || ids[0] != id {
		t.Errorf("list: %v %v, want the owner's job", ids, errm)
	}
	if m := guest.rpc("job-manager.getinfo", nil); m.Errnum() != 0 || !strings.Contains(m.PayloadString(), "max_jobid") {
		t.Errorf("getinfo: %d %q", m.Errnum(), m.PayloadString())
	}
	if m := guest.rpc("job-manager.raise", map[string]any{"id": id, "type": "cancel", "severity": 0}); m.Errnum() != uint32(syscall.EPERM) {
		t.Errorf("raise on the owner's job: %d %q, want EPERM", m.Errnum(), m.PayloadString())
	}
}

func TestJournalFilters(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	tag := c.request("job-manager.events-journal", map[string]any{"allow": map[string]any{"submit": 1, "clean": 1, "finish": 1}, "deny": map[string]any{"finish": 1}}, wire.FlagStreaming)
	c.wait(tag, 1, 5*time.Second) // sentinel
	id := c.submit(16, 0, "true")
	msgs := c.wait(tag, 3, 5*time.Second)
	for i, want := range []string{"submit", "clean"} {
		var p struct {
			ID     uint64
			Events []struct{ Name string }
		}
		if err := msgs[1+i].DecodeJSON(&p); err != nil || p.ID != id || len(p.Events) != 1 || p.Events[0].Name != want {
			t.Fatalf("journal response %d = %q, want %s", 1+i, msgs[1+i].PayloadString(), want)
		}
	}
	if m := c.rpc("job-manager.events-journal", map[string]any{}); m.Errnum() != uint32(syscall.EPROTO) ||
		m.PayloadString() != "job-manager.events requires streaming RPC flag" {
		t.Fatalf("non-streaming journal: %d %q", m.Errnum(), m.PayloadString())
	}
}

func TestWaitAnyQueued(t *testing.T) {
	srv := startServer(t, testbroker.Options{TimeScale: 0.001})
	c := dialRaw(t, srv)
	id := c.submit(16, 4, "sleep", "50")
	tag := c.request("job-manager.wait", map[string]any{"id": -1}, 0)
	m := c.wait(tag, 1, 5*time.Second)[0]
	var p struct {
		ID      uint64
		Success bool
	}
	if err := m.DecodeJSON(&p); err != nil || p.ID != id || !p.Success {
		t.Fatalf("wait any: %d %q", m.Errnum(), m.PayloadString())
	}
}

func TestListTimestampAndHostConstraints(t *testing.T) {
	srv := startServer(t, testbroker.Options{Hostname: "node7"})
	c := dialRaw(t, srv)
	id := c.submit(16, 0, "true")
	c.events(id)
	for _, tc := range []struct {
		constraint any
		n          int
	}{
		{map[string]any{"t_inactive": []string{">=1"}}, 1},
		{map[string]any{"t_submit": []string{"<1"}}, 0},
		{map[string]any{"hostlist": []string{"node7"}}, 1},
		{map[string]any{"hostlist": []string{"node8"}}, 0},
	} {
		ids, errm := c.list(tc.constraint)
		if errm != nil || len(ids) != tc.n {
			t.Errorf("%v: %v %v", tc.constraint, ids, errm)
		}
	}
	if _, errm := c.list(map[string]any{"t_run": []string{"5"}}); errm == nil || errm.PayloadString() != "invalid payload: constraint object invalid: timestamp comparison operator not specified" {
		t.Errorf("bad timestamp constraint: %v", errm)
	}
}
