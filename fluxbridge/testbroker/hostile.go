package testbroker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// Hostile is a way for the broker to misbehave toward its clients, to
// test that a client survives a broker it cannot trust (a compromised
// instance, garbage on a relay's standard output, a stalled pipe): that
// it stays within its memory and notices, with a clear error, on the
// affected connection only.
type Hostile int32

const (
	// HostileNone is normal behaviour.
	HostileNone Hostile = iota
	// HostileOversized replaces every message sent with a length prefix
	// of 1 GiB followed by 64 KiB of zeros (and nothing more).
	HostileOversized
	// HostileGarbage replaces every message sent with as many random
	// bytes (at least 64).
	HostileGarbage
	// HostileSlowDrip writes every message one byte at a time, DripDelay
	// apart: nothing is refused, but an answer takes forever.
	HostileSlowDrip
	// HostileEndlessStream makes every job-info.eventlog-watch stream,
	// after its first response, send "priority" events without end (as
	// fast as the client reads them) until the client goes away.
	HostileEndlessStream
	// HostileHugeContexts gives every event a job-info.eventlog-watch
	// stream sends (output watches too) a context of about 1.5 MiB: a
	// 512 KiB note, 256 Ki nested empty arrays, 20,000 small members,
	// and the event's own members (so a finish event's status is still
	// there). Its message stays under the 4 MiB cap.
	HostileHugeContexts
)

// DripDelay is the time between two bytes under HostileSlowDrip.
const DripDelay = 10 * time.Millisecond

// String names the mode as tests and benchmarks print it.
func (h Hostile) String() string {
	switch h {
	case HostileNone:
		return "none"
	case HostileOversized:
		return "oversized-frame"
	case HostileGarbage:
		return "garbage"
	case HostileSlowDrip:
		return "slow-drip"
	case HostileEndlessStream:
		return "endless-stream"
	case HostileHugeContexts:
		return "huge-contexts"
	}
	return fmt.Sprintf("Hostile(%d)", int32(h))
}

// HostileModes are the modes other than HostileNone.
var HostileModes = []Hostile{HostileOversized, HostileGarbage, HostileSlowDrip, HostileEndlessStream, HostileHugeContexts}

type hostileState struct {
	mode atomic.Int32
	// sent counts messages sent in a hostile way (replaced, endless
	// events, huge contexts) and bytes dripped.
	sent atomic.Int64
	// endless marks the (conn, matchtag) streams that have their endless
	// goroutine.
	endless sync.Map
}

// SetHostile switches the broker to mode h for every message it sends
// from now on, on every connection (HostileNone: back to normal).
// Endless streams already started go on until their client goes away.
func (s *Server) SetHostile(h Hostile) { s.hostile.mode.Store(int32(h)) }

// HostileSent returns how many messages were sent in a hostile way
// (for HostileSlowDrip: how many bytes were dripped).
func (s *Server) HostileSent() int64 { return s.hostile.sent.Load() }

func (s *Server) hostileMode() Hostile { return Hostile(s.hostile.mode.Load()) }

// hostileFrame returns what to queue instead of m's framing b under the
// current mode (b itself when the mode changes nothing).
func (c *conn) hostileFrame(m *wire.Message, b []byte) []byte {
	switch c.s.hostileMode() {
	case HostileOversized:
		c.s.hostile.sent.Add(1)
		out := binary.LittleEndian.AppendUint32(nil, wire.StreamMagic)
		out = binary.BigEndian.AppendUint32(out, 1<<30)
		return append(out, make([]byte, 64<<10)...)
	case HostileGarbage:
		c.s.hostile.sent.Add(1)
		out := make([]byte, max(len(b), 64))
		for i := range out {
			out[i] = byte(rand.Uint32())
		}
		return out
	case HostileEndlessStream:
		if m.Topic == "job-info.eventlog-watch" && m.Errnum() == 0 {
			c.startEndless(m)
		}
	case HostileHugeContexts:
		if m.Topic == "job-info.eventlog-watch" && m.Errnum() == 0 && m.Flags&wire.FlagPayload != 0 {
			if nb, ok := hugeContextResponse(m); ok {
				c.s.hostile.sent.Add(1)
				return nb
			}
		}
	}
	return b
}

// startEndless starts, once per stream, the goroutine that sends endless
// "priority" events on the stream m answers.
func (c *conn) startEndless(m *wire.Message) {
	key := [2]any{c, m.Matchtag()}
	if _, loaded := c.s.hostile.endless.LoadOrStore(key, true); loaded {
		return
	}
	tmpl := *m
	tmpl.Routes = append([]string(nil), m.Routes...)
	c.s.connWG.Add(1)
	go func() {
		defer c.s.connWG.Done()
		defer c.s.hostile.endless.Delete(key)
		for i := 0; ; i++ {
			select {
			case <-c.done:
				return
			default:
			}
			c.mu.Lock()
			backlog := len(c.out)
			c.mu.Unlock()
			if backlog > 64 { // as fast as the client reads
				time.Sleep(time.Millisecond)
				continue
			}
			line := fmt.Sprintf(`{"timestamp":%d.5,"name":"priority","context":{"priority":%d}}`, 1700000000+i, i)
			p, err := json.Marshal(map[string]string{"event": line})
			if err != nil {
				return
			}
			ev := tmpl
			ev.Payload = append(p, 0)
			b, err := wire.AppendFramed(nil, &ev)
			if err != nil {
				return
			}
			c.s.hostile.sent.Add(1)
			c.queue(b)
		}
	}()
}

// hugeMembers is the hostile context's own members as JSON, without the
// braces, built once.
var hugeMembers = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	b.WriteString(`"note":"` + strings.Repeat("n", 512<<10) + `",`)
	b.WriteString(`"junk":[` + strings.Repeat("[],", 256<<10) + `[]]`)
	for i := range 20000 {
		fmt.Fprintf(&b, `,"k%d":1`, i)
	}
	return b.Bytes()
})

// hugeContextResponse rewrites an eventlog-watch response {"event": LINE}
// with LINE's context grown by hugeMembers (its own members last, so that
// they win).
func hugeContextResponse(m *wire.Message) ([]byte, bool) {
	var resp struct {
		Event string `json:"event"`
	}
	if json.Unmarshal(bytes.TrimSuffix(m.Payload, []byte{0}), &resp) != nil || resp.Event == "" {
		return nil, false
	}
	var ev struct {
		Timestamp json.RawMessage `json:"timestamp"`
		Name      json.RawMessage `json:"name"`
		Context   json.RawMessage `json:"context"`
	}
	if json.Unmarshal([]byte(resp.Event), &ev) != nil {
		return nil, false
	}
	var line bytes.Buffer
	line.WriteString(`{"timestamp":`)
	line.Write(ev.Timestamp)
	line.WriteString(`,"name":`)
	line.Write(ev.Name)
	line.WriteString(`,"context":{`)
	line.Write(hugeMembers())
	if own := bytes.TrimSpace(ev.Context); len(own) > 2 && own[0] == '{' {
		line.WriteByte(',')
		line.Write(own[1:]) // its members and the closing brace
	} else {
		line.WriteByte('}')
	}
	line.WriteByte('}')
	p, err := json.Marshal(map[string]string{"event": line.String()})
	if err != nil {
		return nil, false
	}
	out := *m
	out.Payload = append(p, 0)
	b, err := wire.AppendFramed(nil, &out)
	if err != nil {
		return nil, false
	}
	return b, true
}

// drip writes b a byte at a time, DripDelay apart, until c closes.
func (c *conn) drip(b []byte) error {
	for i := range b {
		if _, err := c.nc.Write(b[i : i+1]); err != nil {
			return err
		}
		c.s.hostile.sent.Add(1)
		t := time.NewTimer(DripDelay)
		select {
		case <-c.done:
			t.Stop()
			return net.ErrClosed
		case <-t.C:
		}
	}
	return nil
}
