package wire_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// benchMessages: a small response (eventlog event) and a large request
// (job submit with a signed jobspec), both from the transcripts.
func benchMessages(b *testing.B) map[string][]byte {
	out := map[string][]byte{}
	for _, s := range loadTranscripts(b) {
		switch s.Name {
		case "submit":
			out["submit-request"] = s.Conns[0].Client[0][wire.PrefixSize:]
		case "eventlog-watch":
			out["event-response"] = s.Conns[0].Broker[1][wire.PrefixSize:]
		}
	}
	if len(out) != 2 {
		b.Fatal("benchmark messages missing")
	}
	return out
}

func BenchmarkEncode(b *testing.B) {
	for name, data := range benchMessages(b) {
		var m wire.Message
		if err := m.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			buf := make([]byte, 0, 4096)
			for b.Loop() {
				var err error
				buf, err = wire.AppendFramed(buf[:0], &m)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/WriteMessage", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := wire.WriteMessage(io.Discard, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for name, data := range benchMessages(b) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var m wire.Message
				if err := m.UnmarshalBinary(data); err != nil {
					b.Fatal(err)
				}
			}
		})
		framed, err := wire.AppendFramed(nil, mustDecode(b, data))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/Reader", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			rd := bytes.NewReader(framed)
			r := wire.NewReader(rd, 0)
			for b.Loop() {
				rd.Reset(framed)
				if _, err := r.ReadMessage(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustDecode(b *testing.B, data []byte) *wire.Message {
	var m wire.Message
	if err := m.UnmarshalBinary(data); err != nil {
		b.Fatal(err)
	}
	return &m
}
