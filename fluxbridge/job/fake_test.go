package job

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

func TestMain(m *testing.M) {
	fluxtest.RunRelayIfChild()
	goleak.VerifyTestMain(m)
}

var (
	scenariosOnce sync.Once
	scenarios     map[string]*wiretest.Scenario
	scenariosErr  error
)

// scenario returns a transcript recorded from flux-core 0.88.0
// (../shared/flux-wire). A missing transcript fails the test.
func scenario(t *testing.T, name string) *wiretest.Scenario {
	t.Helper()
	scenariosOnce.Do(func() {
		var all []*wiretest.Scenario
		all, scenariosErr = wiretest.Load(wiretest.Dir())
		scenarios = map[string]*wiretest.Scenario{}
		for _, s := range all {
			scenarios[s.Name] = s
		}
	})
	if scenariosErr != nil {
		t.Fatalf("loading the flux-core transcripts: %v", scenariosErr)
	}
	s, ok := scenarios[name]
	if !ok {
		t.Fatalf("no transcript %q in %s", name, wiretest.Dir())
	}
	return s
}

func decodeFramed(t *testing.T, framed []byte) *wire.Message {
	t.Helper()
	var m wire.Message
	if err := m.UnmarshalBinary(framed[wire.PrefixSize:]); err != nil {
		t.Fatalf("decoding a recorded message: %v", err)
	}
	return &m
}

// exchange is one recorded request and the broker's responses to it.
type exchange struct {
	req   *wire.Message
	resps []*wire.Message
	used  bool
}

// received is a request the fake server got, with the recorded one it
// was matched to (nil if none).
type received struct {
	got, recorded *wire.Message
}

// fakeBroker is a minimal broker double on a real unix socket, built on
// fluxbridge/wire and independent of fluxbridge/testbroker: it answers each
// request with the responses a real broker gave to the same request in a
// transcript (matchtags rewritten), or through handle when set.
type fakeBroker struct {
	t      *testing.T
	uri    string
	ln     net.Listener
	handle func(req *wire.Message) []*wire.Message // nil: replay only

	mu    sync.Mutex
	ex    []*exchange
	got   []received
	conns []net.Conn
	wg    sync.WaitGroup
}

// newFakeBroker starts a fake broker replaying the named transcripts.
func newFakeBroker(t *testing.T, names ...string) *fakeBroker {
	t.Helper()
	fb := &fakeBroker{t: t}
	for _, name := range names {
		for _, c := range scenario(t, name).Conns {
			var resps []*wire.Message
			for _, b := range c.Broker {
				resps = append(resps, decodeFramed(t, b))
			}
			for _, b := range c.Client {
				req := decodeFramed(t, b)
				e := &exchange{req: req}
				if req.Flags&wire.FlagNoResponse == 0 {
					for _, r := range resps {
						if r != nil && r.Topic == req.Topic && r.Aux2 == req.Aux2 {
							e.resps = append(e.resps, r)
						}
					}
					// Responses go to the first request with their matchtag.
					for i, r := range resps {
						for _, mine := range e.resps {
							if r == mine {
								resps[i] = nil
							}
						}
					}
				}
				fb.ex = append(fb.ex, e)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "local")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fb.ln, fb.uri = ln, "local://"+path
	fb.wg.Add(1)
	go fb.serve()
	t.Cleanup(fb.close)
	return fb
}

func (fb *fakeBroker) close() {
	_ = fb.ln.Close()
	fb.mu.Lock()
	for _, c := range fb.conns {
		_ = c.Close()
	}
	fb.mu.Unlock()
	fb.wg.Wait()
}

func (fb *fakeBroker) serve() {
	defer fb.wg.Done()
	for {
		nc, err := fb.ln.Accept()
		if err != nil {
			return
		}
		fb.mu.Lock()
		fb.conns = append(fb.conns, nc)
		fb.mu.Unlock()
		fb.wg.Add(1)
		go fb.serveConn(nc)
	}
}

func (fb *fakeBroker) serveConn(nc net.Conn) {
	defer fb.wg.Done()
	defer nc.Close()
	if _, err := nc.Write([]byte{0}); err != nil {
		return
	}
	r := wire.NewReader(nc, wire.DefaultMaxSize)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		for _, resp := range fb.respond(m) {
			if err := wire.WriteMessage(nc, resp); err != nil {
				return
			}
		}
	}
}

// respond records req and returns what to answer.
// setHandle sets fb.handle once the broker is serving.
func (fb *fakeBroker) setHandle(h func(req *wire.Message) []*wire.Message) {
	fb.mu.Lock()
	fb.handle = h
	fb.mu.Unlock()
}

func (fb *fakeBroker) respond(req *wire.Message) []*wire.Message {
	fb.mu.Lock()
	handle := fb.handle
	fb.mu.Unlock()
	if handle != nil {
		if out := handle(req); out != nil {
			fb.mu.Lock()
			fb.got = append(fb.got, received{got: req})
			fb.mu.Unlock()
			return out
		}
	}
	fb.mu.Lock()
	defer fb.mu.Unlock()
	// The unused recorded request with the same topic and payload, else
	// the first unused one with the same topic.
	var e *exchange
	for _, x := range fb.ex {
		if !x.used && x.req.Topic == req.Topic && bytes.Equal(x.req.Payload, req.Payload) {
			e = x
			break
		}
	}
	for _, x := range fb.ex {
		if e == nil && !x.used && x.req.Topic == req.Topic {
			e = x
		}
	}
	fb.got = append(fb.got, received{got: req})
	if e == nil {
		if req.Flags&wire.FlagNoResponse != 0 {
			return nil
		}
		return []*wire.Message{wire.NewErrorResponse(req, 38, "fake broker: no recorded "+req.Topic)}
	}
	e.used = true
	fb.got[len(fb.got)-1].recorded = e.req
	var out []*wire.Message
	for _, r := range e.resps {
		c := *r
		c.Aux2 = req.Aux2
		out = append(out, &c)
	}
	return out
}

// requests returns the requests received so far on topic.
func (fb *fakeBroker) requests(topic string) []received {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	var out []received
	for _, r := range fb.got {
		if r.got.Topic == topic {
			out = append(out, r)
		}
	}
	return out
}

// checkRequest checks the one request on topic against the recorded one:
// header type and flags, and the payload, byte for byte when exact (a
// request flux-core's C library built) or as JSON values otherwise (a
// request from flux-core's Python bindings, whose spacing differs).
func (fb *fakeBroker) checkRequest(topic string, exact bool) {
	fb.t.Helper()
	reqs := fb.requests(topic)
	if len(reqs) != 1 {
		fb.t.Fatalf("%s: got %d requests, want 1", topic, len(reqs))
	}
	got, rec := reqs[0].got, reqs[0].recorded
	if rec == nil {
		fb.t.Fatalf("%s: no recorded request to compare with", topic)
	}
	if got.Type != rec.Type || got.Flags != rec.Flags || got.UserID != rec.UserID || got.Rolemask != rec.Rolemask || got.Aux1 != rec.Aux1 {
		fb.t.Errorf("%s header:\n got %v\nwant %v", topic, got, rec)
	}
	if exact {
		if !bytes.Equal(got.Payload, rec.Payload) {
			fb.t.Errorf("%s payload:\n got %q\nwant %q", topic, got.Payload, rec.Payload)
		}
		return
	}
	var g, w any
	if err := got.DecodeJSON(&g); err != nil {
		fb.t.Fatal(err)
	}
	if err := rec.DecodeJSON(&w); err != nil {
		fb.t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		fb.t.Errorf("%s payload:\n got %s\nwant %s", topic, got.PayloadString(), rec.PayloadString())
	}
}

// dial connects to fb and closes the connection at the end of the test.
func (fb *fakeBroker) dial(t *testing.T) *flux.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []flux.Option
	if d := fluxtest.SelectedDialer(); d != nil { // FLUXBRIDGE_TEST_TRANSPORT
		opts = append(opts, flux.WithDialer(d))
	}
	c, err := flux.Dial(ctx, fb.uri, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fluxError checks that err is a *flux.Error with errno and message.
func fluxError(t *testing.T, err error, errno error, msg string) {
	t.Helper()
	var fe *flux.Error
	if !errors.As(err, &fe) || !errors.Is(err, errno) || !strings.Contains(fe.Message, msg) {
		t.Fatalf("error %v: want a *flux.Error %v with message %q", err, errno, msg)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
