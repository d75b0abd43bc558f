package testbroker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

func TestConnectError(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	srv.SetConnectError(syscall.ECONNREFUSED)
	if c := dialRaw(t, srv); c.accept != byte(syscall.ECONNREFUSED) {
		t.Fatalf("accept byte = %d, want %d", c.accept, syscall.ECONNREFUSED)
	}
	srv.SetConnectError(0)
	if c := dialRaw(t, srv); c.accept != 0 {
		t.Fatalf("accept byte = %d after reset, want 0", c.accept)
	}
}

func otherUID() *uint32 {
	u := myUID() + 1
	return &u
}

func TestGuestRefusedWithoutAllowGuests(t *testing.T) {
	srv := startServer(t, testbroker.Options{OwnerUID: otherUID()})
	if c := dialRaw(t, srv); c.accept != byte(syscall.EPERM) {
		t.Fatalf("accept byte = %d, want EPERM", c.accept)
	}
}

func TestGuestRules(t *testing.T) {
	tests := []struct {
		name    string
		signing bool
		topic   string
		payload func(c *rawClient) any
		errno   syscall.Errno
		text    string
	}{
		{"none signing refused", false, "job-ingest.submit", func(*rawClient) any {
			return map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 0}
		}, syscall.EPERM, "only instance owner can use sign-type=none"},
		{"urgency above default", true, "job-ingest.submit", func(*rawClient) any {
			return map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 17, "flags": 0}
		}, syscall.EINVAL, "only the instance owner can submit with urgency >16"},
		{"waitable", true, "job-ingest.submit", func(*rawClient) any {
			return map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 4}
		}, syscall.EINVAL, "only the instance owner can submit with FLUX_JOB_WAITABLE"},
		{"novalidate", true, "job-ingest.submit", func(*rawClient) any {
			return map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 8}
		}, syscall.EPERM, "only the instance owner can submit with FLUX_JOB_NOVALIDATE"},
		{"signer mismatch", true, "job-ingest.submit", func(*rawClient) any {
			return map[string]any{"J": signNone(jobspecFor("true"), myUID()+7), "urgency": 16, "flags": 0}
		}, syscall.EPERM, fmt.Sprintf("signer=%d != requestor=%d", myUID()+7, myUID())},
		{"urgency raise above default", true, "job-manager.urgency", func(c *rawClient) any {
			return map[string]any{"id": c.submit(0, 0, "true"), "urgency": 17}
		}, syscall.EPERM, "guests can only adjust urgency <= default"},
		{"urgency release to default", true, "job-manager.urgency", func(c *rawClient) any {
			return map[string]any{"id": c.submit(0, 0, "true"), "urgency": 16}
		}, 0, `{"old_urgency":0}`},
		{"journal", true, "job-manager.events-journal", func(*rawClient) any {
			return map[string]any{"full": true}
		}, syscall.EPERM, "Request requires owner credentials"},
		// the KVS takes guests' requests and its namespace owner check
		// refuses them, without a message (test/realflux TestGuestRefusals)
		{"kvs lookup", true, "kvs.lookup", func(*rawClient) any {
			return map[string]any{"key": "a", "namespace": "primary", "flags": 0}
		}, syscall.EPERM, ""},
		{"kvs commit", true, "kvs.commit", func(*rawClient) any {
			return map[string]any{"namespace": "primary", "flags": 0, "ops": []any{map[string]any{"key": "a", "flags": 0,
				"dirent": map[string]any{"data": "aGVsbG8=", "type": "val", "ver": 1}}}}
		}, syscall.EPERM, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, testbroker.Options{OwnerUID: otherUID(), AllowGuests: true, GuestSigning: tc.signing})
			c := dialRaw(t, srv)
			if c.accept != 0 {
				t.Fatalf("accept byte %d", c.accept)
			}
			flags := wire.Flags(0)
			if tc.topic == "job-manager.events-journal" {
				flags = wire.FlagStreaming
			}
			tag := c.request(tc.topic, tc.payload(c), flags)
			m := c.wait(tag, 1, 5*time.Second)[0]
			if m.Errnum() != uint32(tc.errno) || m.PayloadString() != tc.text {
				t.Fatalf("got errno %d %q, want %d %q", m.Errnum(), m.PayloadString(), tc.errno, tc.text)
			}
			// A guest's responses carry its uid and USER|LOCAL.
			if m.UserID != myUID() || m.Rolemask != 6 {
				t.Errorf("response creds uid=%d rolemask=%d, want %d and 6", m.UserID, m.Rolemask, myUID())
			}
		})
	}
}

func TestSubmitError(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	srv.SetSubmitError(syscall.EAGAIN, "job-ingest is busy")
	m := c.rpc("job-ingest.submit", map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 0})
	if m.Errnum() != uint32(syscall.EAGAIN) || m.PayloadString() != "job-ingest is busy" {
		t.Fatalf("got %d %q", m.Errnum(), m.PayloadString())
	}
	srv.SetSubmitError(0, "")
	id := c.submit(16, 0, "true")
	if got := names(c.events(id)); got != fullLife {
		t.Fatalf("events after reset = %q", got)
	}
}

func TestResponseDelay(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	const d = 50 * time.Millisecond
	srv.SetResponseDelay(d)
	start := time.Now()
	m := c.rpc("job-list.list-id", map[string]any{"id": 1, "attrs": []string{}})
	if elapsed := time.Since(start); elapsed < d {
		t.Fatalf("response after %v, want at least %v", elapsed, d)
	}
	if m.Errnum() != uint32(syscall.ENOENT) {
		t.Fatalf("errno %d", m.Errnum())
	}
	srv.SetResponseDelay(0)
}

// waitClosed waits for the broker to close c.
func waitClosed(t *testing.T, c *rawClient) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed by the broker")
	}
}

func TestDropConnections(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	id := c.submit(16, 0, "sleep", "300")
	waitForEvent(t, c, id, "start")
	if err := srv.DropConnections(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	c2 := dialRaw(t, srv)
	m := c2.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"state"}})
	if m.Errnum() != 0 || m.PayloadString() != fmt.Sprintf(`{"job":{"id":%d,"state":16}}`, id) {
		t.Fatalf("after drop: %d %q", m.Errnum(), m.PayloadString())
	}
}

func TestLifecycleOfServer(t *testing.T) {
	srv := testbroker.New(testbroker.Options{})
	if err := srv.DropConnections(); !errors.Is(err, testbroker.ErrNotStarted) {
		t.Fatalf("DropConnections before Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Start(ctx); err == nil {
		t.Fatal("Start with a cancelled context succeeded")
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); !errors.Is(err, testbroker.ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	c := dialRaw(t, srv)
	id := c.submit(16, 0, "sleep", "300")
	waitForEvent(t, c, id, "start")
	c.request("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0}, wire.FlagStreaming)
	c.request("job-manager.events-journal", map[string]any{}, wire.FlagStreaming)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c)
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := srv.Restart(true); !errors.Is(err, testbroker.ErrClosed) {
		t.Fatalf("Restart after Close: %v", err)
	}
	if _, err := net.Dial("unix", srv.SocketPath()); err == nil {
		t.Fatal("socket still accepts after Close")
	}
	// Every goroutine the server started (accept loop, per-connection
	// reader and writer, job lifecycles) is gone once Close returns.
	goleak.VerifyNone(t)
}

func TestConcurrentClients(t *testing.T) {
	srv := startServer(t, testbroker.Options{Cores: 2})
	const clients, jobs = 6, 4
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		c := dialRaw(t, srv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ids []uint64
			for k := 0; k < jobs; k++ {
				tag := c.request("job-ingest.submit", map[string]any{"J": signNone(jobspecFor("true"), myUID()), "urgency": 16, "flags": 0}, 0)
				msgs, err := c.waitErr(tag, 1, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				var out struct{ ID uint64 }
				if err := msgs[0].DecodeJSON(&out); err != nil {
					errs <- err
					return
				}
				ids = append(ids, out.ID)
			}
			for _, id := range ids {
				tag := c.request("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0}, wire.FlagStreaming)
				msgs, err := c.waitErr(tag, 11, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				if msgs[10].Errnum() != uint32(syscall.ENODATA) {
					errs <- fmt.Errorf("job %d: watch ended with errno %d", id, msgs[10].Errnum())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(srv.Jobs()); n != clients*jobs {
		t.Fatalf("%d jobs, want %d", n, clients*jobs)
	}
}

func TestPauseScheduling(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	c := dialRaw(t, srv)
	srv.PauseScheduling(true)
	id := c.submit(16, 0, "true")
	waitForEvent(t, c, id, "priority")
	// Paused means "not scheduled": there is no event for a job that is
	// not allocated, so this negative check waits a bounded moment, well
	// beyond the few microseconds an unpaused broker takes to allocate.
	time.Sleep(20 * time.Millisecond)
	if m := c.rpc("job-list.list-id", map[string]any{"id": id, "attrs": []string{"state"}}); m.PayloadString() != fmt.Sprintf(`{"job":{"id":%d,"state":8}}`, id) {
		t.Fatalf("paused: %q, want state SCHED", m.PayloadString())
	}
	srv.PauseScheduling(false)
	if got := names(c.events(id)); got != fullLife {
		t.Fatalf("events after resume %q", got)
	}
	log, ok := srv.Eventlog(job.ID(id))
	if !ok || strings.Count(log, "\n") != 10 || !strings.HasSuffix(log, "\"name\":\"clean\"}\n") {
		t.Fatalf("Eventlog = %q, %v", log, ok)
	}
	if _, ok := srv.Eventlog(1); ok {
		t.Fatal("Eventlog of an unknown job")
	}
}
