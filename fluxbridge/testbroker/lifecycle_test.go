package testbroker_test

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

const (
	fullLife = "submit validate depend priority alloc start finish release free clean"
)

func TestOutcomes(t *testing.T) {
	srv := startServer(t, testbroker.Options{TimeScale: 0.001, Hostname: "vm"})
	c := dialRaw(t, srv)
	tests := []struct {
		command []string
		events  string
		status  float64
		note    string
	}{
		{[]string{"true"}, fullLife, 0, ""},
		{[]string{"false"}, fullLife, 256, ""},
		{[]string{"sleep", "2"}, fullLife, 0, ""},
		{[]string{"exit", "3"}, fullLife, 3 << 8, ""},
		{[]string{"sh", "-c", "exit 5"}, fullLife, 5 << 8, ""},
		{[]string{"sh", "-c", "sleep 1; false"}, fullLife, 1 << 8, ""},
		{[]string{"sh", "-c", "kill -TERM $$"}, fullLife, 143 << 8, ""},
		{[]string{"kill-self", "SIGKILL"}, fullLife, 137 << 8, ""},
		{[]string{"kill-shell", "9"}, fullLife, 9, ""},
		{[]string{"/bin/echo", "hi"}, fullLife, 0, ""},
		{[]string{"/not/a/real/app"}, "submit validate depend priority alloc start exception finish release free clean", 32512,
			"task 0 (host vm): start failed: /not/a/real/app: No such file or directory"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.command, "_"), func(t *testing.T) {
			id := c.submit(16, 0, tc.command...)
			ev := c.events(id)
			if got := names(ev); got != tc.events {
				t.Fatalf("events = %q, want %q", got, tc.events)
			}
			for _, e := range ev {
				ctx, _ := e["context"].(map[string]any)
				switch e["name"] {
				case "finish":
					if ctx["status"] != tc.status {
						t.Errorf("finish status = %v, want %v", ctx["status"], tc.status)
					}
				case "exception":
					if ctx["note"] != tc.note || ctx["type"] != "exec" || ctx["severity"] != 0.0 {
						t.Errorf("exception context = %v", ctx)
					}
				case "submit":
					want := map[string]any{"userid": float64(myUID()), "urgency": 16.0, "flags": 0.0, "version": 1.0}
					for k, v := range want {
						if ctx[k] != v {
							t.Errorf("submit context %s = %v, want %v", k, ctx[k], v)
						}
					}
				case "release":
					if ctx["ranks"] != "all" || ctx["final"] != true {
						t.Errorf("release context = %v", ctx)
					}
				}
			}
		})
	}
}

func TestRunDurationOverridesCommand(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	var js map[string]any
	_ = json.Unmarshal(jobspecFor("false"), &js)
	js["attributes"].(map[string]any)["system"].(map[string]any)["exec"] = map[string]any{"test": map[string]any{"run_duration": "0.001s"}}
	b, _ := json.Marshal(js)
	resp := c.rpc("job-ingest.submit", map[string]any{"J": signNone(b, myUID()), "urgency": 16, "flags": 0})
	var out struct{ ID uint64 }
	if err := resp.DecodeJSON(&out); err != nil {
		t.Fatal(err)
	}
	ev := c.events(out.ID)
	for _, e := range ev {
		if e["name"] == "finish" && e["context"].(map[string]any)["status"] != 0.0 {
			t.Fatalf("finish = %v, want status 0 (test exec mode ignores the command)", e)
		}
	}
}

func TestTimeLimit(t *testing.T) {
	srv := startServer(t, testbroker.Options{TimeScale: 0.001})
	c := dialRaw(t, srv)
	var js map[string]any
	_ = json.Unmarshal(jobspecFor("sleep", "100"), &js)
	js["attributes"].(map[string]any)["system"].(map[string]any)["duration"] = 10
	b, _ := json.Marshal(js)
	resp := c.rpc("job-ingest.submit", map[string]any{"J": signNone(b, myUID()), "urgency": 16, "flags": 0})
	var out struct{ ID uint64 }
	if err := resp.DecodeJSON(&out); err != nil {
		t.Fatal(err)
	}
	ev := c.events(out.ID)
	if got, want := names(ev), "submit validate depend priority alloc start exception finish release free clean"; got != want {
		t.Fatalf("events = %q, want %q", got, want)
	}
	if ctx := ev[6]["context"].(map[string]any); ctx["type"] != "timeout" {
		t.Fatalf("exception = %v, want type timeout", ctx)
	}
}

func TestCancelRunningAndPending(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	running := c.submit(16, 0, "sleep", "300")
	held := c.submit(0, 0, "true")
	waitForEvent(t, c, running, "start")
	waitForEvent(t, c, held, "priority")
	for _, id := range []uint64{running, held} {
		resp := c.rpc("job-manager.raise", map[string]any{"id": id, "type": "cancel", "severity": 0})
		if resp.Errnum() != 0 || resp.Flags&wire.FlagPayload != 0 {
			t.Fatalf("cancel: errno %d payload %q, want empty success", resp.Errnum(), resp.PayloadString())
		}
	}
	if got, want := names(c.events(running)), "submit validate depend priority alloc start exception finish release free clean"; got != want {
		t.Errorf("running job events = %q, want %q", got, want)
	}
	if got, want := names(c.events(held)), "submit validate depend priority exception clean"; got != want {
		t.Errorf("held job events = %q, want %q", got, want)
	}
	// Cancelling an inactive job: ENOENT "job is inactive" (d5 transcript).
	resp := c.rpc("job-manager.raise", map[string]any{"id": running, "type": "cancel", "severity": 0})
	if resp.Errnum() != uint32(syscall.ENOENT) || resp.PayloadString() != "job is inactive" {
		t.Errorf("cancel inactive: %d %q", resp.Errnum(), resp.PayloadString())
	}
}

// waitForEvent watches id until an event named name has been posted.
func waitForEvent(t *testing.T, c *rawClient, id uint64, name string) {
	t.Helper()
	tag := c.request("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0}, wire.FlagStreaming)
	for n := 1; ; n++ {
		msgs := c.wait(tag, n, 10*time.Second)
		m := msgs[n-1]
		if m.Errnum() != 0 {
			t.Fatalf("watch of %d ended (errno %d) before %s", id, m.Errnum(), name)
		}
		var p struct{ Event string }
		if err := m.DecodeJSON(&p); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p.Event, `"name":"`+name+`"`) {
			c.request("job-info.eventlog-watch-cancel", map[string]any{"matchtag": tag}, wire.FlagNoResponse)
			return
		}
	}
}
