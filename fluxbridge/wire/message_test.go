package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

func loadTranscripts(tb testing.TB) []*wiretest.Scenario {
	tb.Helper()
	dir := wiretest.Dir()
	sc, err := wiretest.Load(dir)
	if err != nil {
		tb.Fatalf("transcripts are required (set %s to override %s): %v", wiretest.EnvDir, dir, err)
	}
	return sc
}

// TestTranscriptsRoundTrip decodes every captured message, re-encodes it,
// and requires the same bytes; then decodes the whole byte stream of each
// direction with a Reader and re-encodes it with WriteMessage.
func TestTranscriptsRoundTrip(t *testing.T) {
	scenarios := loadTranscripts(t)
	total := 0
	for _, s := range scenarios {
		t.Run(s.Name, func(t *testing.T) {
			for _, c := range s.Conns {
				if !bytes.Equal(c.Accept, []byte{0}) {
					t.Errorf("conn %d: accept byte %x, want 00", c.ID, c.Accept)
				}
				for _, dir := range []struct {
					name   string
					msgs   [][]byte
					stream []byte
				}{{"client", c.Client, c.ClientStream}, {"broker", c.Broker, c.BrokerStream}} {
					for i, framed := range dir.msgs {
						total++
						var m wire.Message
						if err := m.UnmarshalBinary(framed[wire.PrefixSize:]); err != nil {
							t.Fatalf("conn %d %s msg %d: decode: %v", c.ID, dir.name, i, err)
						}
						enc, err := m.MarshalBinary()
						if err != nil {
							t.Fatalf("conn %d %s msg %d: encode: %v", c.ID, dir.name, i, err)
						}
						if !bytes.Equal(enc, framed[wire.PrefixSize:]) {
							t.Fatalf("conn %d %s msg %d: re-encoding differs\n got %x\nwant %x", c.ID, dir.name, i, enc, framed[wire.PrefixSize:])
						}
						fr, err := wire.AppendFramed(nil, &m)
						if err != nil || !bytes.Equal(fr, framed) {
							t.Fatalf("conn %d %s msg %d: framed re-encoding differs (err %v)", c.ID, dir.name, i, err)
						}
						if dir.name == "client" && m.Type != wire.TypeRequest {
							t.Errorf("conn %d client msg %d: type %s", c.ID, i, m.Type)
						}
					}
					// Whole stream through Reader / WriteMessage.
					r := wire.NewReader(bytes.NewReader(dir.stream), 0)
					var out bytes.Buffer
					n := 0
					for {
						m, err := r.ReadMessage()
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatalf("conn %d %s stream msg %d: %v", c.ID, dir.name, n, err)
						}
						if err := wire.WriteMessage(&out, m); err != nil {
							t.Fatal(err)
						}
						n++
					}
					if n != len(dir.msgs) || !bytes.Equal(out.Bytes(), dir.stream) {
						t.Fatalf("conn %d %s: stream re-encoding differs (%d msgs, want %d)", c.ID, dir.name, n, len(dir.msgs))
					}
				}
			}
		})
	}
	if total < 100 {
		t.Fatalf("only %d messages in the transcripts; expected the full capture set", total)
	}
}

// TestDecodeKnownMessages checks decoded fields against the captured
// submit exchange (flux-wire/submit.decoded.txt).
func TestDecodeKnownMessages(t *testing.T) {
	var submit *wiretest.Scenario
	for _, s := range loadTranscripts(t) {
		if s.Name == "submit" {
			submit = s
		}
	}
	if submit == nil {
		t.Fatal("submit transcript missing")
	}
	c := submit.Conns[0]
	tests := []struct {
		name   string
		framed []byte
		want   wire.Message
		prefix string
	}{
		{"request", c.Client[0], wire.Message{Type: wire.TypeRequest, Flags: wire.FlagTopic | wire.FlagPayload | wire.FlagRoute,
			Topic: "job-ingest.submit", UserID: wire.UserIDUnknown, Rolemask: 0, Aux1: wire.NodeIDAny, Aux2: 1}, `{"J":"dmVyc2lvbgBpMQB1c2VyaWQAaTAA`},
		{"response", c.Broker[0], wire.Message{Type: wire.TypeResponse, Flags: wire.FlagTopic | wire.FlagPayload | wire.FlagRoute,
			Topic: "job-ingest.submit", UserID: 0, Rolemask: 5, Aux1: 0, Aux2: 1}, `{"id":24779948032}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m wire.Message
			if err := m.UnmarshalBinary(tt.framed[8:]); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(m.PayloadString(), tt.prefix) || m.Payload[len(m.Payload)-1] != 0 {
				t.Errorf("payload %q: want prefix %q and trailing NUL", m.PayloadString(), tt.prefix)
			}
			m.Payload = nil
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("got  %+v\nwant %+v", m, tt.want)
			}
		})
	}
}

func TestEncodeRequest(t *testing.T) {
	p, err := wire.JSONPayload(map[string]any{"matchtag": 1})
	if err != nil {
		t.Fatal(err)
	}
	m := wire.NewRequest("job-info.eventlog-watch-cancel", p, wire.MatchtagNone)
	m.Flags |= wire.FlagNoResponse
	b, err := wire.AppendFramed(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	// Captured in flux-wire/eventlog-watch.jsonl.
	want := "1200eeff0000004500" + "1e6a6f622d696e666f2e6576656e746c6f672d77617463682d63616e63656c" +
		"0f7b226d61746368746167223a317d00" + "148e01010fffffffff00000000ffffffff00000000"
	if got := hexs(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func hexs(b []byte) string {
	const d = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(d[c>>4])
		s.WriteByte(d[c&15])
	}
	return s.String()
}

func TestJSONHelpers(t *testing.T) {
	p, err := wire.JSONPayload(map[string]string{"a": "<b>&"})
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != "{\"a\":\"<b>&\"}\x00" {
		t.Errorf("JSONPayload = %q", p)
	}
	m := wire.NewRequest("t", p, 1)
	var v map[string]string
	if err := m.DecodeJSON(&v); err != nil || v["a"] != "<b>&" {
		t.Errorf("DecodeJSON = %v, %v", v, err)
	}
	if m.PayloadString() != `{"a":"<b>&"}` {
		t.Errorf("PayloadString = %q", m.PayloadString())
	}
	if err := wire.NewRequest("t", nil, 1).DecodeJSON(&v); !errors.Is(err, wire.ErrNoPayload) {
		t.Errorf("DecodeJSON without payload: %v", err)
	}
	if _, err := wire.JSONPayload(func() {}); err == nil {
		t.Error("JSONPayload(func) succeeded")
	}
}

func TestLongFrames(t *testing.T) {
	for _, n := range []int{0, 1, 253, 254, 255, 256, 70000} {
		m := wire.NewRequest(strings.Repeat("t", n%300), bytes.Repeat([]byte{'x'}, n), 7)
		m.Routes = []string{"a", strings.Repeat("r", n%400+1)}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := m.EncodedSize(); n != len(b) {
			t.Errorf("EncodedSize %d, len %d", n, len(b))
		}
		var got wire.Message
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !reflect.DeepEqual(&got, m) {
			t.Errorf("n=%d: round trip differs", n)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good, _ := wire.NewRequest("a.b", []byte("{}\x00"), 1).MarshalBinary()
	hdr := func(typ, flags byte) []byte {
		h := []byte{20, 0x8e, 1, typ, flags}
		return append(h, make([]byte, 16)...)
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, wire.ErrTruncated},
		{"cut", good[:len(good)-1], wire.ErrTruncated},
		{"cut long length", []byte{0xff, 0, 0}, wire.ErrTruncated},
		{"huge frame", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 1}, wire.ErrTruncated},
		{"short header", []byte{3, 0x8e, 1, 1}, wire.ErrBadHeader},
		{"bad magic", append([]byte{20, 0x8f}, make([]byte, 19)...), wire.ErrBadHeader},
		{"bad version", append([]byte{20, 0x8e, 2}, make([]byte, 18)...), wire.ErrBadHeader},
		{"bad type", hdr(3, 0), wire.ErrBadHeader},
		{"topic missing", hdr(1, 0x01), wire.ErrTruncated},
		{"payload missing", append([]byte{1, 'x'}, hdr(1, 0x03)...), wire.ErrTruncated},
		{"route delimiter missing", append([]byte{1, 'x'}, hdr(1, 0x08)...), wire.ErrTruncated},
		{"extra frame", append([]byte{1, 'x'}, hdr(1, 0)...), wire.ErrBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m wire.Message
			if err := m.UnmarshalBinary(tt.data); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		m    wire.Message
	}{
		{"bad type", wire.Message{Type: 3}},
		{"topic without flag", wire.Message{Type: wire.TypeEvent, Topic: "x"}},
		{"payload without flag", wire.Message{Type: wire.TypeEvent, Payload: []byte("x")}},
		{"routes without flag", wire.Message{Type: wire.TypeEvent, Routes: []string{"x"}}},
		{"empty route", wire.Message{Type: wire.TypeEvent, Flags: wire.FlagRoute, Routes: []string{""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.m.MarshalBinary(); !errors.Is(err, wire.ErrBadHeader) {
				t.Errorf("err = %v, want ErrBadHeader", err)
			}
			if err := wire.WriteMessage(io.Discard, &tt.m); !errors.Is(err, wire.ErrBadHeader) {
				t.Errorf("WriteMessage err = %v", err)
			}
		})
	}
}

// countingReader counts bytes handed out, to show allocation follows data.
type countingReader struct{ r io.Reader }

func (c *countingReader) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestReaderErrors(t *testing.T) {
	good, _ := wire.AppendFramed(nil, wire.NewRequest("a.b", []byte("{}\x00"), 1))
	prefix := func(magic, n uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, magic)
		return binary.BigEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name string
		data []byte
		max  int
		want error
	}{
		{"eof", nil, 0, io.EOF},
		{"cut prefix", good[:5], 0, wire.ErrTruncated},
		{"cut body", good[:len(good)-3], 0, io.ErrUnexpectedEOF},
		{"bad magic", prefix(0x12345678, 21), 0, wire.ErrBadMagic},
		{"too large", prefix(wire.StreamMagic, 1000), 999, wire.ErrTooLarge},
		{"hostile length default limit", prefix(wire.StreamMagic, 0xffffffff), 0, wire.ErrTooLarge},
		{"hostile length within limit", prefix(wire.StreamMagic, 1<<30), 1 << 31, wire.ErrTruncated},
		{"bad body", append(prefix(wire.StreamMagic, 2), 1, 0), 0, wire.ErrBadHeader},
		{"bad body is malformed", append(prefix(wire.StreamMagic, 2), 1, 0), 0, wire.ErrMalformed},
		{"frames cut inside a whole message are malformed", append(prefix(wire.StreamMagic, 2), 5, 0), 0, wire.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := wire.NewReader(&countingReader{bytes.NewReader(tt.data)}, tt.max)
			if _, err := r.ReadMessage(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReaderHostileLengthAllocation: a 1 GiB length field with no data
// behind it must not allocate anywhere near 1 GiB.
func TestReaderHostileLengthAllocation(t *testing.T) {
	b := binary.LittleEndian.AppendUint32(nil, wire.StreamMagic)
	b = binary.BigEndian.AppendUint32(b, 1<<30)
	b = append(b, make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := wire.NewReader(bytes.NewReader(b), 1<<31).ReadMessage(); !errors.Is(err, wire.ErrTruncated) {
			t.Fatalf("err = %v, want ErrTruncated", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 1<<20 {
		t.Errorf("allocated %d bytes per read of a hostile 1 GiB length", per)
	}
}

func TestStrings(t *testing.T) {
	if s := (wire.FlagTopic | wire.FlagStreaming).String(); s != "TOPIC|STREAMING" {
		t.Errorf("Flags.String = %q", s)
	}
	if s := wire.Flags(0).String(); s != "0" {
		t.Errorf("Flags(0).String = %q", s)
	}
	for typ, want := range map[wire.Type]string{1: "request", 2: "response", 4: "event", 8: "control", 3: "type(0x03)"} {
		if typ.String() != want {
			t.Errorf("%d.String = %q", typ, typ.String())
		}
	}
	m := wire.NewErrorResponse(wire.NewRequest("a.b", nil, 9), 2, "no such thing")
	if s := m.String(); !strings.Contains(s, `topic="a.b"`) || !strings.Contains(s, "matchtag=9") || !strings.Contains(s, "no such thing") {
		t.Errorf("Message.String = %q", s)
	}
	if m.Errnum() != 2 || m.Matchtag() != 9 || m.PayloadString() != "no such thing" {
		t.Errorf("accessors: %d %d %q", m.Errnum(), m.Matchtag(), m.PayloadString())
	}
	if r := wire.NewRequest("a", nil, 1); r.NodeID() != wire.NodeIDAny || r.Seq() != wire.NodeIDAny {
		t.Errorf("NodeID = %x", r.NodeID())
	}
}

// TestHostileFrameCounts: a message made of many empty (or one-byte)
// frames is refused with ErrBadHeader once it has more frames than a
// message can have, instead of costing a slice entry (and a route string)
// per byte; a message with MaxRoutes routes still decodes.
func TestHostileFrameCounts(t *testing.T) {
	header := func(flags wire.Flags) []byte {
		m := &wire.Message{Type: wire.TypeResponse, Flags: flags}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b[len(b)-1-wire.HeaderSize:]
	}
	routes := func(n int) []string {
		r := make([]string, n)
		for i := range r {
			r[i] = "r"
		}
		return r
	}
	tests := []struct {
		name string
		data []byte
		want error // nil: decodes
	}{
		{"a million empty frames", append(bytes.Repeat([]byte{0}, 1<<20), header(0)...), wire.ErrBadHeader},
		{"a million one-byte routes", append(append(bytes.Repeat([]byte{1, 'r'}, 1<<20), 0), header(wire.FlagRoute)...), wire.ErrBadHeader},
		{"MaxRoutes+1 routes", append(append(bytes.Repeat([]byte{1, 'r'}, wire.MaxRoutes+1), 0), header(wire.FlagRoute)...), wire.ErrBadHeader},
		{"MaxRoutes routes", append(append(bytes.Repeat([]byte{1, 'r'}, wire.MaxRoutes), 0), header(wire.FlagRoute)...), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var m wire.Message
			err := m.UnmarshalBinary(tt.data)
			runtime.ReadMemStats(&after)
			if tt.want == nil {
				if err != nil || len(m.Routes) != wire.MaxRoutes {
					t.Fatalf("err = %v, %d routes", err, len(m.Routes))
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// the old decoder kept a 24-byte slice entry per frame
			// (tens of MiB here) and a string per route
			if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
				t.Errorf("decoding allocated %d bytes", got)
			}
		})
	}
	if _, err := (&wire.Message{Type: wire.TypeRequest, Flags: wire.FlagRoute, Routes: routes(wire.MaxRoutes + 1)}).MarshalBinary(); !errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("encoding MaxRoutes+1 routes: %v", err)
	}
}

// TestDefaultMaxSize: with no limit given, a Reader refuses a length
// prefix above wire.DefaultMaxSize (4 MiB) before reading or allocating
// the message, and accepts one of exactly that size.
func TestDefaultMaxSize(t *testing.T) {
	if wire.DefaultMaxSize != 4<<20 {
		t.Fatalf("DefaultMaxSize = %d", wire.DefaultMaxSize)
	}
	prefix := func(n uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, wire.StreamMagic)
		return binary.BigEndian.AppendUint32(b, n)
	}
	for _, tt := range []struct {
		name string
		n    uint32
		want error
	}{
		{"limit+1", wire.DefaultMaxSize + 1, wire.ErrTooLarge},
		{"64 MiB (the old limit)", 64 << 20, wire.ErrTooLarge},
		{"limit, nothing behind", wire.DefaultMaxSize, wire.ErrTruncated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cr := &countingReader{r: bytes.NewReader(prefix(tt.n))}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := wire.NewReader(cr, 0).ReadMessage()
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
				t.Errorf("allocated %d bytes", got)
			}
		})
	}
}
