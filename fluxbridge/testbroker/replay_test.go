package testbroker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// The replay tests send the client side of every captured scenario
// (../shared/flux-wire) to the test broker and compare each response with
// the real broker's: header fields, errno, error text, and the payload's
// shape (keys and JSON types, and values except job IDs mapped to ours,
// timestamps and core numbers).

// prep is a job a scenario acts on that was created outside the capture:
// the test creates an equivalent one first and maps the captured ID to it.
type prep struct {
	captured uint64
	command  []string
	urgency  int
	until    string // event to wait for before the replay
}

type replaySpec struct {
	name  string
	preps []prep
	// during runs once the first connection's requests are sent (b2: a
	// held job is released by another command while being followed).
	during func(h *replayHarness)
}

type replayHarness struct {
	t     *testing.T
	srv   *testbroker.Server
	idmap map[uint64]uint64
	admin *rawClient
}

// asRoot makes every request claim uid 0 with the owner's roles, through
// the owner's credential pass-through (src/common/librouter/auth.c), so
// jobs and responses carry the uid the captures were made with.
func asRoot(m *wire.Message) {
	m.UserID = 0
	m.Rolemask = 5
}

func TestReplayFluxWire(t *testing.T) {
	specs := []replaySpec{
		{name: "submit"},
		{name: "eventlog-watch"},
		{name: "eventlog-nonexistent"},
		{name: "submit-invalid"},
		{name: "submit-urgency-waitable"},
		{name: "wait"},
		{name: "urgency", preps: []prep{{captured: 102139691008, command: []string{"sleep", "300"}, urgency: 16, until: "start"}}},
		{name: "kill"},
		{name: "raise", preps: []prep{{captured: 131768254464, command: []string{"sleep", "300"}, urgency: 16, until: "start"}}},
		{name: "cancel"},
		{name: "urgency-pending", preps: []prep{{captured: 163997286400, command: []string{"true"}, urgency: 0, until: "priority"}}},
		{name: "list"},
		{name: "list-id"},
		{name: "python-executor"},
	}
	runReplay(t, specs)
}

func TestReplayBinHex(t *testing.T) {
	specs := []replaySpec{
		{name: "bin-hex/a-submit"},
		{name: "bin-hex/b1-wait-event-clean"},
		{name: "bin-hex/b2-eventlog-follow",
			preps: []prep{{captured: 26625441792, command: []string{"sleep", "1"}, urgency: 0, until: "priority"}},
			during: func(h *replayHarness) {
				m := h.admin.rpc("job-manager.urgency", map[string]any{"id": h.idmap[26625441792], "urgency": 16})
				if m.Errnum() != 0 {
					h.t.Errorf("release held job: errno %d", m.Errnum())
				}
			}},
		{name: "bin-hex/b3-eventlog-nonexistent"},
		{name: "bin-hex/b4-wait-event-timeout", preps: []prep{{captured: 71454162944, command: []string{"sleep", "300"}, urgency: 16, until: "start"}}},
		{name: "bin-hex/c-cancel"},
		{name: "bin-hex/d1-urgency-pending", preps: []prep{{captured: 98230599680, command: []string{"true"}, urgency: 0, until: "priority"}}},
		{name: "bin-hex/d2-urgency-running-error", preps: []prep{{captured: 106887643136, command: []string{"sleep", "300"}, urgency: 16, until: "start"}}},
		{name: "bin-hex/d3-kill"},
		{name: "bin-hex/d4-raise", preps: []prep{{captured: 124033957888, command: []string{"sleep", "300"}, urgency: 16, until: "start"}}},
		{name: "bin-hex/d5-cancel-inactive-error"},
		{name: "bin-hex/e1-jobs-list"},
		{name: "bin-hex/e2-jobs-list-id"},
		{name: "bin-hex/e3-jobs-list-id-nonexistent"},
		{name: "bin-hex/f1-submit-invalid-jobspec"},
		{name: "bin-hex/f2-submit-not-json"},
		{name: "bin-hex/f3-raw-rpc-errors"},
		{name: "bin-hex/g-python-executor-2jobs"},
		{name: "bin-hex/h-submit-waitable-wait"},
	}
	runReplay(t, specs)
}

func loadScenarios(t *testing.T) map[string]*wiretest.Scenario {
	t.Helper()
	scenarios, err := wiretest.Load(wiretest.Dir())
	if err != nil {
		t.Fatalf("transcripts: %v", err)
	}
	byName := map[string]*wiretest.Scenario{}
	for _, s := range scenarios {
		byName[s.Name] = s
	}
	return byName
}

func runReplay(t *testing.T, specs []replaySpec) {
	byName := loadScenarios(t)
	srv := startServer(t, testbroker.Options{Hostname: "vm"})
	h := &replayHarness{t: t, srv: srv, idmap: map[uint64]uint64{}}
	h.admin = dialRaw(t, srv)
	h.admin.rewrite = asRoot
	for _, spec := range specs {
		sc, ok := byName[spec.name]
		if !ok {
			t.Fatalf("scenario %s not found in %s", spec.name, wiretest.Dir())
		}
		ok = t.Run(strings.ReplaceAll(spec.name, "/", "_"), func(t *testing.T) {
			h.t = t
			for _, p := range spec.preps {
				id := h.admin.submitAs(0, p.urgency, 0, p.command...)
				h.idmap[p.captured] = id
				waitForEvent(t, h.admin, id, p.until)
			}
			during := spec.during
			for _, conn := range sc.Conns {
				h.replayConn(conn, during)
				if len(conn.Client) > 0 {
					during = nil
				}
			}
		})
		if !ok {
			// Later scenarios act on the jobs of earlier ones.
			return
		}
	}
}

var bigNumber = regexp.MustCompile(`-?\b[0-9]{6,}\b`)

// rewriteIDs replaces captured job IDs in a JSON payload with ours.
func (h *replayHarness) rewriteIDs(p []byte) []byte {
	return bigNumber.ReplaceAllFunc(p, func(b []byte) []byte {
		n, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			return b
		}
		if id, ok := h.idmap[n]; ok {
			return []byte(strconv.FormatUint(id, 10))
		}
		return b
	})
}

func decodeFramed(t *testing.T, framed []byte) *wire.Message {
	t.Helper()
	var m wire.Message
	if err := m.UnmarshalBinary(framed[wire.PrefixSize:]); err != nil {
		t.Fatalf("decode captured message: %v", err)
	}
	return &m
}

// replayConn sends one captured connection's requests and compares the
// responses.
func (h *replayHarness) replayConn(conn *wiretest.Conn, during func(*replayHarness)) {
	t := h.t
	c := dialRaw(t, h.srv)
	defer c.Close()
	if len(conn.Accept) != 1 || c.accept != conn.Accept[0] {
		t.Fatalf("accept byte = %d, captured %v", c.accept, conn.Accept)
	}
	want := map[uint32][]*wire.Message{}
	for _, b := range conn.Broker {
		m := decodeFramed(t, b)
		want[m.Matchtag()] = append(want[m.Matchtag()], m)
	}
	// Pair each request with its captured responses: matchtags can be
	// reused once a request is answered (f3 sends five RPCs with matchtag
	// 1), so take them in order: one for an RPC, up to the error response
	// that ends a stream.
	type pending struct {
		mt         uint32
		from, to   int // want[mt][from:to]
		streamOpen bool
	}
	next := map[uint32]int{}
	var reqs []pending
	for _, b := range conn.Client {
		req := decodeFramed(t, b)
		if req.Flags&wire.FlagPayload != 0 {
			req.Payload = h.rewriteIDs(req.Payload)
		}
		asRoot(req)
		c.send(req)
		if req.Flags&wire.FlagNoResponse != 0 {
			continue
		}
		mt := req.Matchtag()
		p := pending{mt: mt, from: next[mt]}
		p.to = p.from
		ws := want[mt]
		for p.to < len(ws) {
			p.to++
			if req.Flags&wire.FlagStreaming == 0 || ws[p.to-1].Errnum() != 0 {
				break
			}
		}
		p.streamOpen = req.Flags&wire.FlagStreaming != 0 && (p.to == p.from || ws[p.to-1].Errnum() == 0)
		next[mt] = p.to
		reqs = append(reqs, p)
		if len(reqs) == 1 && during != nil {
			during(h)
		}
		got := c.wait(mt, p.to, 20*time.Second)
		// Learn our IDs from submit responses.
		if req.Topic == "job-ingest.submit" && p.to > p.from && got[p.to-1].Errnum() == 0 {
			var w, g struct{ ID uint64 }
			if ws[p.to-1].DecodeJSON(&w) == nil && got[p.to-1].DecodeJSON(&g) == nil {
				h.idmap[w.ID] = g.ID
			}
		}
	}
	// Streams that the capture saw end must not say more; give a stray
	// response a moment to show up. A response that should not exist has
	// no event to wait for, so this negative check is a bounded wait; the
	// broker writes a request's responses from the handler that got it, so
	// a stray one is already on the wire or follows within microseconds.
	time.Sleep(20 * time.Millisecond)
	for _, p := range reqs {
		w := want[p.mt]
		c.mu.Lock()
		g := append([]*wire.Message(nil), c.byTag[p.mt]...)
		c.mu.Unlock()
		if !p.streamOpen && next[p.mt] == p.to && len(g) != p.to {
			t.Errorf("matchtag %d (%s): %d responses, captured %d", p.mt, topicOf(w), len(g), p.to)
		}
		for i := p.from; i < p.to && i < len(g); i++ {
			if err := h.compare(w[i], g[i]); err != nil {
				t.Errorf("matchtag %d response %d (%s): %v\n captured: %s\n     ours: %s", p.mt, i, w[i].Topic, err, w[i], g[i])
			}
		}
	}
}

func topicOf(ms []*wire.Message) string {
	if len(ms) == 0 {
		return "?"
	}
	return ms[0].Topic
}

var missingKey = regexp.MustCompile(`^Missing key \([a-z]+\)$`)

// compare checks that ours has the captured response's shape.
func (h *replayHarness) compare(want, got *wire.Message) error {
	if want.Type != got.Type || want.Flags != got.Flags || want.Topic != got.Topic ||
		want.Errnum() != got.Errnum() || want.Matchtag() != got.Matchtag() ||
		want.UserID != got.UserID || want.Rolemask != got.Rolemask || len(want.Routes) != len(got.Routes) {
		return fmt.Errorf("header differs")
	}
	if want.Flags&wire.FlagPayload == 0 {
		return nil
	}
	if want.Errnum() != 0 {
		w, g := want.PayloadString(), got.PayloadString()
		if w == g || (missingKey.MatchString(w) && missingKey.MatchString(g)) {
			return nil
		}
		return fmt.Errorf("error text %q, captured %q", g, w)
	}
	wv, err := decodeUseNumber(bytes.TrimRight(want.Payload, "\x00"))
	if err != nil {
		return fmt.Errorf("captured payload: %w", err)
	}
	gv, err := decodeUseNumber(bytes.TrimRight(got.Payload, "\x00"))
	if err != nil {
		return fmt.Errorf("our payload: %w", err)
	}
	if err := h.sameShape("", wv, gv); err != nil {
		return err
	}
	if wk, gk := keyOrder(want.PayloadString()), keyOrder(got.PayloadString()); wk != gk {
		return fmt.Errorf("keys in order %s, captured %s", gk, wk)
	}
	return nil
}

func decodeUseNumber(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// volatile keys hold values that differ between runs.
var volatile = map[string]bool{
	"timestamp": true, "t_submit": true, "t_depend": true, "t_priority": true,
	"t_sched": true, "t_run": true, "t_cleanup": true, "t_inactive": true,
	"starttime": true, "expiration": true, "resource_summary": true, "core": true,
}

func (h *replayHarness) sameShape(path string, want, got any) error {
	key := path[strings.LastIndex(path, ".")+1:]
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, captured an object", path, got)
		}
		for k := range w {
			if _, ok := g[k]; !ok {
				return fmt.Errorf("%s: key %q missing", path, k)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("%s: extra key %q", path, k)
			}
		}
		for k := range w {
			if err := h.sameShape(path+"."+k, w[k], g[k]); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: %T, captured an array", path, got)
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: %d elements, captured %d", path, len(g), len(w))
		}
		for i := range w {
			if err := h.sameShape(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case string:
		g, ok := got.(string)
		if !ok {
			return fmt.Errorf("%s: %T, captured a string", path, got)
		}
		switch key {
		case "event":
			wv, err1 := decodeUseNumber([]byte(w))
			gv, err2 := decodeUseNumber([]byte(g))
			if err1 != nil || err2 != nil || !strings.HasSuffix(g, "\n") {
				return fmt.Errorf("%s: event %q is not one JSON line", path, g)
			}
			// Same key order as the broker's (jansson packs them in order).
			if wk, gk := keyOrder(w), keyOrder(g); wk != gk {
				return fmt.Errorf("%s: event keys in order %s, captured %s", path, gk, wk)
			}
			if ts := timestampText.FindStringSubmatch(g); ts == nil || strings.ContainsAny(ts[1], "eE") {
				return fmt.Errorf("%s: event %q timestamp is not plain decimal", path, g)
			}
			return h.sameShape(path+"(event)", wv, gv)
		case "eventlog":
			wl, gl := strings.Split(w, "\n"), strings.Split(g, "\n")
			if len(wl) != len(gl) {
				return fmt.Errorf("%s: %d lines, captured %d", path, len(gl), len(wl))
			}
			for i := range wl {
				if wl[i] == "" && gl[i] == "" {
					continue
				}
				wv, err1 := decodeUseNumber([]byte(wl[i]))
				gv, err2 := decodeUseNumber([]byte(gl[i]))
				if err1 != nil || err2 != nil {
					return fmt.Errorf("%s: line %d is not JSON", path, i)
				}
				if err := h.sameShape(fmt.Sprintf("%s[%d]", path, i), wv, gv); err != nil {
					return err
				}
			}
			return nil
		}
		if !volatile[key] && w != g {
			return fmt.Errorf("%s: %q, captured %q", path, g, w)
		}
		return nil
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return fmt.Errorf("%s: %T, captured a number", path, got)
		}
		if volatile[key] {
			return nil
		}
		if key == "id" {
			wn, _ := strconv.ParseInt(w.String(), 10, 64)
			gn, _ := strconv.ParseInt(g.String(), 10, 64)
			if mapped, ok := h.idmap[uint64(wn)]; ok {
				if uint64(gn) != mapped {
					return fmt.Errorf("%s: job %d, want %d (captured %d)", path, gn, mapped, wn)
				}
				return nil
			}
			if wn != gn {
				return fmt.Errorf("%s: %d, captured %d", path, gn, wn)
			}
			return nil
		}
		wf, _ := w.Float64()
		gf, _ := g.Float64()
		if wf != gf {
			return fmt.Errorf("%s: %s, captured %s", path, g, w)
		}
		return nil
	default:
		if fmt.Sprintf("%T %v", want, want) != fmt.Sprintf("%T %v", got, got) {
			return fmt.Errorf("%s: %v, captured %v", path, got, want)
		}
		return nil
	}
}

var timestampText = regexp.MustCompile(`^\{"timestamp":([0-9.eE+-]+),`)

// keyOrder lists a JSON document's object keys in the order they appear.
func keyOrder(doc string) string {
	dec := json.NewDecoder(strings.NewReader(doc))
	var keys []string
	// Track whether the next string token in an object is a key.
	type frame struct {
		object bool
		key    bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		isKey := false
		if n := len(stack); n > 0 && stack[n-1].object {
			isKey = stack[n-1].key
			stack[n-1].key = !stack[n-1].key
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, frame{object: true, key: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:len(stack)-1]
				if n := len(stack); n > 0 && stack[n-1].object {
					stack[n-1].key = true
				}
			}
			continue
		case string:
			if isKey {
				keys = append(keys, v)
			}
		}
	}
	return strings.Join(keys, ",")
}
