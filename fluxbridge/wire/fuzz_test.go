package wire_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// FuzzDecode feeds arbitrary bytes to UnmarshalBinary and to a Reader. The
// seed corpus is every message of every captured transcript (go test runs
// it). Properties: no panic; whatever decodes re-encodes, and decoding the
// re-encoding gives the same Message; canonical input re-encodes to itself.
func FuzzDecode(f *testing.F) {
	for _, s := range loadTranscripts(f) {
		for _, c := range s.Conns {
			for _, msgs := range [][][]byte{c.Client, c.Broker} {
				for _, framed := range msgs {
					f.Add(framed[wire.PrefixSize:])
				}
			}
			f.Add(c.BrokerStream)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m wire.Message
		if err := m.UnmarshalBinary(data); err == nil {
			enc, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded message does not encode: %v", err)
			}
			var m2 wire.Message
			if err := m2.UnmarshalBinary(enc); err != nil {
				t.Fatalf("re-encoding does not decode: %v", err)
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("round trip differs:\n%v\n%v", &m, &m2)
			}
			if len(enc) == len(data) && !bytes.Equal(enc, data) {
				t.Fatalf("same-length re-encoding differs")
			}
		}
		// The same bytes as a stream, with a small limit.
		r := wire.NewReader(bytes.NewReader(data), 1<<16)
		for range 64 {
			if _, err := r.ReadMessage(); err != nil {
				break
			}
		}
	})
}
