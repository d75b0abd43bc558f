package flux

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// TestReplayTranscripts replays the client side of every captured
// connection through Conn against a fake server that answers with the
// captured broker responses, and requires that the bytes our client sends
// are identical to the bytes flux-core's clients sent, and that every
// response surfaces as the captured payload, *Error or io.EOF.
func TestReplayTranscripts(t *testing.T) {
	scenarios, err := wiretest.Load(wiretest.Dir())
	if err != nil {
		t.Fatalf("transcripts are required (set %s): %v", wiretest.EnvDir, err)
	}
	n := 0
	for _, s := range scenarios {
		for _, c := range s.Conns {
			if len(c.Client) == 0 {
				continue
			}
			n++
			t.Run(s.Name+"/conn"+itoa(c.ID), func(t *testing.T) { replayConn(t, c) })
		}
	}
	if n < 20 {
		t.Fatalf("only %d connections replayed", n)
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

func decodeAll(t *testing.T, framed [][]byte) []*wire.Message {
	t.Helper()
	out := make([]*wire.Message, len(framed))
	for i, b := range framed {
		out[i] = new(wire.Message)
		if err := out[i].UnmarshalBinary(b[wire.PrefixSize:]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

type outcome struct {
	payloads []string
	err      error
}

// replayConn replays one captured connection. Our Conn hands out matchtags
// 1, 2, 3, ... (skipping ones in use); flux-core's Python bindings hand out
// the lowest free one, freed when the future is destroyed, so a capture
// where a tag is reused (f3-raw-rpc-errors) is compared with its tags
// renumbered to our sequence. Everything else must match byte for byte.
func replayConn(t *testing.T, c *wiretest.Conn) {
	reqs := decodeAll(t, c.Client)
	resps := decodeAll(t, c.Broker)

	// Assign captured responses to requests: per matchtag, requests in
	// order, each taking responses up to its final one.
	type call struct {
		req       *wire.Message
		ourTag    uint32
		responses []*wire.Message
	}
	calls := make([]*call, len(reqs))
	byTag := map[uint32][]*call{}
	next := uint32(0)
	renumbered := false
	for i, r := range reqs {
		calls[i] = &call{req: r}
		if r.Flags&wire.FlagNoResponse != 0 {
			continue
		}
		next++
		calls[i].ourTag = next
		if next != r.Matchtag() {
			renumbered = true
		}
		byTag[r.Matchtag()] = append(byTag[r.Matchtag()], calls[i])
	}
	for _, m := range resps {
		q := byTag[m.Matchtag()]
		if len(q) == 0 {
			t.Fatalf("captured response with matchtag %d has no request", m.Matchtag())
		}
		cl := q[0]
		cl.responses = append(cl.responses, m)
		if cl.req.Flags&wire.FlagStreaming == 0 || m.Errnum() != 0 {
			byTag[m.Matchtag()] = q[1:]
		}
	}
	var want []byte
	for _, cl := range calls {
		m := *cl.req
		m.Aux2 = cl.ourTag
		var err error
		if want, err = wire.AppendFramed(want, &m); err != nil {
			t.Fatal(err)
		}
	}
	if !renumbered && !bytes.Equal(want, c.ClientStream) {
		t.Fatal("re-encoded capture differs from the capture")
	}
	if renumbered {
		t.Logf("capture reuses matchtags; comparing with tags renumbered 1..%d", next)
	}

	received := make(chan *wire.Message, len(reqs))
	srv := newFakeServer(t, func(sc *serverConn) {
		i := 0
		sc.serveLoop(func(m *wire.Message) {
			received <- m
			if i >= len(calls) {
				return
			}
			cl := calls[i]
			i++
			for _, r := range cl.responses {
				out := *r
				out.Aux2 = m.Matchtag()
				if err := sc.send(&out); err != nil {
					return
				}
			}
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := Dial(ctx, srv.uri, testDialOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		outcomes = make([]*outcome, len(calls))
	)
	for i, cl := range calls {
		req := cl.req
		var body any
		if req.Flags&wire.FlagPayload != 0 {
			body = json.RawMessage(req.Payload)
		}
		o := &outcome{}
		outcomes[i] = o
		switch {
		case req.Flags&wire.FlagNoResponse != 0:
			if err := conn.Send(ctx, req.Topic, body); err != nil {
				t.Fatalf("request %d: Send: %v", i, err)
			}
		case req.Flags&wire.FlagStreaming != 0:
			st, err := conn.Stream(ctx, req.Topic, body)
			if err != nil {
				t.Fatalf("request %d: Stream: %v", i, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var raw json.RawMessage
					err := st.Recv(&raw)
					mu.Lock()
					if err != nil {
						o.err = err
						mu.Unlock()
						return
					}
					o.payloads = append(o.payloads, string(raw))
					mu.Unlock()
				}
			}()
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				var raw json.RawMessage
				err := conn.RPC(ctx, req.Topic, body, &raw)
				mu.Lock()
				o.err = err
				if err == nil {
					o.payloads = append(o.payloads, string(raw))
				}
				mu.Unlock()
			}()
		}
		got := recvTimeout(t, received)
		if got.Matchtag() != cl.ourTag {
			t.Fatalf("request %d (%s): sent matchtag %d, want %d", i, req.Topic, got.Matchtag(), cl.ourTag)
		}
	}
	// Wait until every captured response has reached its caller.
	deadline := time.Now().Add(10 * time.Second)
	for i, cl := range calls {
		if len(cl.responses) == 0 {
			continue
		}
		last := cl.responses[len(cl.responses)-1]
		for {
			mu.Lock()
			o := outcomes[i]
			done := o.err != nil || (last.Errnum() == 0 && len(o.payloads) == len(cl.responses))
			mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d (%s): no outcome", i, cl.req.Topic)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	srv.Close()

	mine := srv.conns[0].rec.bytes()
	if !bytes.Equal(mine, want) {
		t.Fatalf("client bytes differ from the capture\n got %x\nwant %x", mine, want)
	}
	for i, cl := range calls {
		if cl.req.Flags&wire.FlagNoResponse == 0 {
			checkOutcome(t, cl.req, cl.responses, outcomes[i])
		}
	}
}

// checkOutcome compares what the caller saw with the captured responses.
func checkOutcome(t *testing.T, req *wire.Message, captured []*wire.Message, o *outcome) {
	t.Helper()
	var wantPayloads []string
	var last *wire.Message
	for _, r := range captured {
		if r.Errnum() == 0 {
			wantPayloads = append(wantPayloads, r.PayloadString())
		}
		last = r
	}
	if len(wantPayloads) != len(o.payloads) {
		t.Errorf("%s tag %d: %d payloads, captured %d", req.Topic, req.Matchtag(), len(o.payloads), len(wantPayloads))
		return
	}
	for i := range wantPayloads {
		if o.payloads[i] != wantPayloads[i] {
			t.Errorf("%s tag %d payload %d: %q, captured %q", req.Topic, req.Matchtag(), i, o.payloads[i], wantPayloads[i])
		}
	}
	switch {
	case last == nil || (last.Errnum() == 0 && req.Flags&wire.FlagStreaming != 0):
		// No final response captured: the call ended when we closed.
		if !errors.Is(o.err, ErrClosed) {
			t.Errorf("%s tag %d: err %v, want ErrClosed", req.Topic, req.Matchtag(), o.err)
		}
	case last.Errnum() == 61 && req.Flags&wire.FlagStreaming != 0:
		if o.err != io.EOF {
			t.Errorf("%s tag %d: err %v, want io.EOF", req.Topic, req.Matchtag(), o.err)
		}
	case last.Errnum() != 0:
		var fe *Error
		if !errors.As(o.err, &fe) || uint32(fe.Errno) != last.Errnum() || fe.Message != last.PayloadString() || fe.Topic != req.Topic {
			t.Errorf("%s tag %d: err %#v, captured errno %d %q", req.Topic, req.Matchtag(), o.err, last.Errnum(), last.PayloadString())
		}
	default:
		if o.err != nil {
			t.Errorf("%s tag %d: err %v", req.Topic, req.Matchtag(), o.err)
		}
	}
}
