package testbroker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// TestReplayEventsJournal replays bin-hex/i-events-journal: the backlog
// differs from the capture's (other jobs), so each backlog response is
// compared with a captured one of the same kind; the sentinel, the new
// job's live events, the submit response and the end after cancel are
// compared one for one.
func TestReplayEventsJournal(t *testing.T) {
	sc := loadScenarios(t)["bin-hex/i-events-journal"]
	if sc == nil || len(sc.Conns) != 1 {
		t.Fatal("bin-hex/i-events-journal: scenario missing")
	}
	conn := sc.Conns[0]
	var client, broker []*wire.Message
	for _, b := range conn.Client {
		client = append(client, decodeFramed(t, b))
	}
	for _, b := range conn.Broker {
		broker = append(broker, decodeFramed(t, b))
	}
	// Captured: 10 backlog responses, the sentinel, then (matchtag 1) the
	// new job's 11 live events and ENODATA, and (matchtag 2) the submit
	// response.
	var journal []*wire.Message
	var submitResp *wire.Message
	for _, m := range broker {
		if m.Matchtag() == 1 {
			journal = append(journal, m)
		} else {
			submitResp = m
		}
	}
	const backlog = 10
	if len(client) != 3 || len(journal) != backlog+1+11+1 || submitResp == nil {
		t.Fatalf("unexpected capture: %d requests, %d journal responses", len(client), len(journal))
	}

	srv := startServer(t, testbroker.Options{Hostname: "vm"})
	h := &replayHarness{t: t, srv: srv, idmap: map[uint64]uint64{}}
	admin := dialRaw(t, srv)
	admin.rewrite = asRoot
	// Keys in the order `flux run` writes them, as in the captured backlog:
	// the broker keeps a jobspec's key order.
	done := admin.submitSpec(0, 16, 0, []byte(`{"resources": [{"type": "slot", "count": 1, "with": [{"type": "core", "count": 1}], "label": "task"}], `+
		`"tasks": [{"command": ["true"], "slot": "task", "count": {"per_slot": 1}}], "attributes": {"system": {"duration": 0, "cwd": "/", "environment": {}}}, "version": 1}`))
	admin.events(done)
	running := admin.submitAs(0, 16, 0, "sleep", "300")
	waitForEvent(t, admin, running, "start")

	c := dialRaw(t, srv)
	req := client[0]
	asRoot(req)
	c.send(req)
	got := c.wait(1, 3, 5*time.Second) // done job, running job, sentinel
	// Backlog: a finished job has the captured finished job's shape.
	h.idmap[mustID(t, journal[0])] = done
	if err := h.compare(journal[0], got[0]); err != nil {
		t.Errorf("backlog (inactive job): %v\n captured: %s\n     ours: %s", err, journal[0], got[0])
	}
	// An active job's entry carries the same keys (its R once allocated).
	if err := sameKeys(journal[0], got[1]); err != nil {
		t.Errorf("backlog (running job): %v", err)
	}
	if err := h.compare(journal[backlog], got[2]); err != nil {
		t.Errorf("sentinel: %v\n captured: %s\n     ours: %s", err, journal[backlog], got[2])
	}

	// Submit on the same connection; its events arrive on the journal.
	sub := client[1]
	asRoot(sub)
	c.send(sub)
	resp := c.wait(2, 1, 5*time.Second)[0]
	h.idmap[mustID(t, submitResp)] = mustID(t, resp)
	if err := h.compare(submitResp, resp); err != nil {
		t.Errorf("submit: %v", err)
	}
	live := c.wait(1, 3+11, 10*time.Second)[3:]
	for i, m := range live {
		if err := h.compare(journal[backlog+1+i], m); err != nil {
			t.Errorf("live event %d: %v\n captured: %s\n     ours: %s", i, err, journal[backlog+1+i], m)
		}
	}

	// Cancel: the stream ends with ENODATA.
	cancel := client[2]
	asRoot(cancel)
	c.send(cancel)
	end := c.wait(1, 3+11+1, 5*time.Second)[3+11]
	if err := h.compare(journal[len(journal)-1], end); err != nil {
		t.Errorf("end: %v\n captured: %s\n     ours: %s", err, journal[len(journal)-1], end)
	}
}

func mustID(t *testing.T, m *wire.Message) uint64 {
	t.Helper()
	var p struct{ ID uint64 }
	if err := m.DecodeJSON(&p); err != nil {
		t.Fatalf("decode id: %v", err)
	}
	return p.ID
}

// sameKeys checks that two JSON object payloads have the same top-level
// keys.
func sameKeys(want, got *wire.Message) error {
	var w, g map[string]any
	if err := want.DecodeJSON(&w); err != nil {
		return err
	}
	if err := got.DecodeJSON(&g); err != nil {
		return err
	}
	for k := range w {
		if _, ok := g[k]; !ok {
			return fmt.Errorf("key %q missing from %s", k, got.PayloadString())
		}
	}
	if len(w) != len(g) {
		return fmt.Errorf("keys differ: %s vs captured %s", got.PayloadString(), want.PayloadString())
	}
	return nil
}
