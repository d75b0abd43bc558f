package testbroker_test

import (
	"encoding/json"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// submitNamed submits command with attributes.system.job.name set.
func (c *rawClient) submitNamed(name string, urgency int, command ...string) uint64 {
	c.t.Helper()
	var js map[string]any
	_ = json.Unmarshal(jobspecFor(command...), &js)
	js["attributes"].(map[string]any)["system"].(map[string]any)["job"] = map[string]any{"name": name}
	b, _ := json.Marshal(js)
	resp := c.rpc("job-ingest.submit", map[string]any{"J": signNone(b, myUID()), "urgency": urgency, "flags": 0})
	var out struct{ ID uint64 }
	if resp.Errnum() != 0 || resp.DecodeJSON(&out) != nil {
		c.t.Fatalf("submit: %d %q", resp.Errnum(), resp.PayloadString())
	}
	return out.ID
}

// list runs job-list.list (streaming) and returns the IDs in order, or the
// error response.
func (c *rawClient) list(constraint any) ([]uint64, *wire.Message) {
	c.t.Helper()
	req := map[string]any{"max_entries": 0, "attrs": []string{"name", "state", "result"}, "since": 0.0}
	if constraint != nil {
		req["constraint"] = constraint
	}
	msgs := c.streamUntilEnd("job-list.list", req, 5*time.Second)
	last := msgs[len(msgs)-1]
	if last.Errnum() != uint32(syscall.ENODATA) {
		return nil, last
	}
	var ids []uint64
	for i, m := range msgs[:len(msgs)-1] {
		var p struct {
			Jobs []struct {
				ID uint64 `json:"id"`
			} `json:"jobs"`
			Version *int `json:"version"`
		}
		if err := m.DecodeJSON(&p); err != nil || len(p.Jobs) != 1 {
			c.t.Fatalf("list response %q", m.PayloadString())
		}
		if (i == 0) != (p.Version != nil) {
			c.t.Fatalf("response %d: version present=%v", i, p.Version != nil)
		}
		ids = append(ids, p.Jobs[0].ID)
	}
	return ids, nil
}

func TestListConstraints(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	ok := c.submitNamed("alpha", 16, "true")
	c.events(ok)
	failed := c.submitNamed("beta", 16, "false")
	c.events(failed)
	held := c.submitNamed("alpha", 0, "true")
	waitForEvent(t, c, held, "priority")

	tests := []struct {
		name       string
		constraint any
		want       []uint64
	}{
		{"none", nil, []uint64{held, failed, ok}},
		{"name", map[string]any{"name": []string{"alpha"}}, []uint64{held, ok}},
		{"userid", map[string]any{"userid": []uint32{myUID()}}, []uint64{held, failed, ok}},
		{"other userid", map[string]any{"userid": []uint32{myUID() + 1}}, nil},
		{"states pending", map[string]any{"states": []string{"pending"}}, []uint64{held}},
		{"states mask inactive", map[string]any{"states": []int{64}}, []uint64{failed, ok}},
		{"results failed", map[string]any{"results": []string{"failed"}}, []uint64{failed}},
		{"and", map[string]any{"and": []any{map[string]any{"name": []string{"alpha"}}, map[string]any{"states": []string{"inactive"}}}}, []uint64{ok}},
		{"or", map[string]any{"or": []any{map[string]any{"name": []string{"beta"}}, map[string]any{"states": []string{"sched"}}}}, []uint64{held, failed}},
		{"not", map[string]any{"not": []any{map[string]any{"name": []string{"alpha"}}}}, []uint64{failed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, errm := c.list(tc.constraint)
			if errm != nil {
				t.Fatalf("errno %d %q", errm.Errnum(), errm.PayloadString())
			}
			if !slices.Equal(ids, tc.want) {
				t.Fatalf("got %v, want %v", ids, tc.want)
			}
		})
	}

	errTests := []struct {
		name       string
		constraint any
		text       string
	}{
		{"unknown operator", map[string]any{"color": []string{"red"}}, "invalid payload: constraint object invalid: unknown constraint operator: color"},
		{"name not string", map[string]any{"name": []int{1}}, "invalid payload: constraint object invalid: name value must be a string"},
		{"two operators", map[string]any{"name": []string{"a"}, "userid": []int{1}}, "invalid payload: constraint object invalid: constraint must only contain 1 element"},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			_, errm := c.list(tc.constraint)
			if errm == nil || errm.Errnum() != uint32(syscall.EPROTO) || errm.PayloadString() != tc.text {
				t.Fatalf("got %v, want EPROTO %q", errm, tc.text)
			}
		})
	}
}

func TestListIDAttrs(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	id := c.submitNamed("named", 16, "false")
	c.events(id)
	m := c.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"all"}})
	var p struct{ Job map[string]any }
	if err := m.DecodeJSON(&p); err != nil {
		t.Fatalf("%v: %q", err, m.PayloadString())
	}
	want := map[string]any{"name": "named", "state": 64.0, "result": 2.0, "waitstatus": 256.0, "success": false, "urgency": 16.0, "priority": 16.0, "ntasks": 1.0}
	for k, v := range want {
		if p.Job[k] != v {
			t.Errorf("%s = %v, want %v", k, p.Job[k], v)
		}
	}
	m = c.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"bogus"}})
	if m.Errnum() != uint32(syscall.EINVAL) || m.PayloadString() != "bogus is not a valid attribute" {
		t.Fatalf("bad attr: %d %q", m.Errnum(), m.PayloadString())
	}
}
