package testbroker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rawClient is a minimal wire-level client: it reads the accept byte, then
// collects every response by matchtag.
type rawClient struct {
	t      testing.TB
	nc     net.Conn
	accept byte

	mu      sync.Mutex
	cond    *sync.Cond
	byTag   map[uint32][]*wire.Message
	all     []*wire.Message
	readErr error
	done    chan struct{}
	nextTag uint32
	// rewrite, when set, edits every request made with request().
	rewrite func(*wire.Message)
}

func dialRaw(t testing.TB, srv *testbroker.Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("unix", srv.SocketPath())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	b := make([]byte, 1)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(b); err != nil {
		nc.Close()
		t.Fatalf("read accept byte: %v", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := &rawClient{t: t, nc: nc, accept: b[0], byTag: map[uint32][]*wire.Message{}, done: make(chan struct{}), nextTag: 1}
	c.cond = sync.NewCond(&c.mu)
	if b[0] != 0 {
		close(c.done)
		nc.Close()
		return c
	}
	go c.readLoop()
	t.Cleanup(c.Close)
	return c
}

func (c *rawClient) readLoop() {
	defer close(c.done)
	r := wire.NewReader(c.nc, 0)
	for {
		m, err := r.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.readErr = err
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.byTag[m.Matchtag()] = append(c.byTag[m.Matchtag()], m)
		c.all = append(c.all, m)
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// Close closes the connection and waits for the reader.
func (c *rawClient) Close() {
	c.nc.Close()
	<-c.done
}

// send writes m as is.
func (c *rawClient) send(m *wire.Message) {
	c.t.Helper()
	if err := wire.WriteMessage(c.nc, m); err != nil {
		c.t.Fatalf("send %s: %v", m.Topic, err)
	}
}

// request sends a request with a JSON payload and a fresh matchtag.
func (c *rawClient) request(topic string, payload any, flags wire.Flags) uint32 {
	c.t.Helper()
	var p []byte
	if payload != nil {
		var err error
		if p, err = wire.JSONPayload(payload); err != nil {
			c.t.Fatal(err)
		}
	}
	c.mu.Lock()
	tag := c.nextTag
	c.nextTag++
	c.mu.Unlock()
	m := wire.NewRequest(topic, p, tag)
	m.Flags |= flags
	if flags&wire.FlagNoResponse != 0 {
		m.Aux2 = 0
	}
	if c.rewrite != nil {
		c.rewrite(m)
	}
	c.send(m)
	return tag
}

// wait returns the first n responses with matchtag tag, failing the test
// after timeout.
func (c *rawClient) wait(tag uint32, n int, timeout time.Duration) []*wire.Message {
	c.t.Helper()
	msgs, err := c.waitErr(tag, n, timeout)
	if err != nil {
		c.t.Fatal(err)
	}
	return msgs
}

func (c *rawClient) waitErr(tag uint32, n int, timeout time.Duration) ([]*wire.Message, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.byTag[tag]) < n {
		if c.readErr != nil {
			return nil, fmt.Errorf("matchtag %d: got %d of %d responses: read: %w", tag, len(c.byTag[tag]), n, c.readErr)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("matchtag %d: got %d of %d responses before timeout", tag, len(c.byTag[tag]), n)
		}
		c.cond.Wait()
	}
	return append([]*wire.Message(nil), c.byTag[tag][:n]...), nil
}

// rpc sends a request and waits for its one response.
func (c *rawClient) rpc(topic string, payload any) *wire.Message {
	c.t.Helper()
	tag := c.request(topic, payload, 0)
	return c.wait(tag, 1, 5*time.Second)[0]
}

// streamUntilEnd sends a streaming request and collects responses until an
// error response.
func (c *rawClient) streamUntilEnd(topic string, payload any, timeout time.Duration) []*wire.Message {
	c.t.Helper()
	tag := c.request(topic, payload, wire.FlagStreaming)
	deadline := time.Now().Add(timeout)
	for n := 1; ; n++ {
		msgs, err := c.waitErr(tag, n, time.Until(deadline))
		if err != nil {
			c.t.Fatal(err)
		}
		if msgs[n-1].Errnum() != 0 {
			return msgs
		}
	}
}

// signNone wraps a jobspec like flux-core's sign_none_wrap.
func signNone(jobspec []byte, uid uint32) string {
	h := fmt.Sprintf("version\x00i1\x00userid\x00i%d\x00mechanism\x00snone\x00", uid)
	return base64.StdEncoding.EncodeToString([]byte(h)) + "." + base64.StdEncoding.EncodeToString(jobspec) + ".none"
}

// jobspecFor returns a V1 jobspec running command.
func jobspecFor(command ...string) []byte {
	js := map[string]any{
		"version": 1,
		"resources": []any{map[string]any{"type": "slot", "count": 1, "label": "task",
			"with": []any{map[string]any{"type": "core", "count": 1}}}},
		"tasks":      []any{map[string]any{"command": command, "slot": "task", "count": map[string]any{"per_slot": 1}}},
		"attributes": map[string]any{"system": map[string]any{"duration": 0, "cwd": "/", "environment": map[string]any{}}},
	}
	b, _ := json.Marshal(js)
	return b
}

func myUID() uint32 { return uint32(os.Getuid()) }

// submit submits command and returns the job ID.
func (c *rawClient) submit(urgency, flags int, command ...string) uint64 {
	c.t.Helper()
	return c.submitAs(myUID(), urgency, flags, command...)
}

// submitAs submits command signed by uid and returns the job ID.
func (c *rawClient) submitAs(uid uint32, urgency, flags int, command ...string) uint64 {
	c.t.Helper()
	return c.submitSpec(uid, urgency, flags, jobspecFor(command...))
}

// submitSpec submits a jobspec signed by uid and returns the job ID.
func (c *rawClient) submitSpec(uid uint32, urgency, flags int, jobspec []byte) uint64 {
	c.t.Helper()
	resp := c.rpc("job-ingest.submit", map[string]any{"J": signNone(jobspec, uid), "urgency": urgency, "flags": flags})
	if resp.Errnum() != 0 {
		c.t.Fatalf("submit %s: errno %d %q", jobspec, resp.Errnum(), resp.PayloadString())
	}
	var out struct{ ID uint64 }
	if err := resp.DecodeJSON(&out); err != nil {
		c.t.Fatal(err)
	}
	return out.ID
}

// eventNames watches a job's eventlog to the end and returns the events.
func (c *rawClient) events(id uint64) []map[string]any {
	c.t.Helper()
	msgs := c.streamUntilEnd("job-info.eventlog-watch", map[string]any{"id": id, "path": "eventlog", "flags": 0}, 10*time.Second)
	last := msgs[len(msgs)-1]
	if last.Errnum() != 61 {
		c.t.Fatalf("watch ended with errno %d %q", last.Errnum(), last.PayloadString())
	}
	var out []map[string]any
	for _, m := range msgs[:len(msgs)-1] {
		var p struct{ Event string }
		if err := m.DecodeJSON(&p); err != nil {
			c.t.Fatal(err)
		}
		if !strings.HasSuffix(p.Event, "\n") {
			c.t.Fatalf("event %q does not end in a newline", p.Event)
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(p.Event), &e); err != nil {
			c.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func names(events []map[string]any) string {
	var n []string
	for _, e := range events {
		n = append(n, e["name"].(string))
	}
	return strings.Join(n, " ")
}

func startServer(t testing.TB, opts testbroker.Options) *testbroker.Server {
	t.Helper()
	srv := testbroker.New(opts)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv
}
