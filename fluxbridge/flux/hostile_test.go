package flux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// TestProtocolErrors: a broker that sends what this client refuses (a
// message over the limit, garbage, frames that do not decode) ends that
// Conn with ErrDisconnected wrapping a *ProtocolError that names the
// reason; pending calls get the same error; a new Conn to the same (now
// sane) server works.
func TestProtocolErrors(t *testing.T) {
	lengthPrefix := func(n uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, wire.StreamMagic)
		return binary.BigEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name   string
		bad    func(sc *serverConn)
		opts   []Option
		reason string
		cause  error
	}{
		{"length over the default limit, nothing behind", func(sc *serverConn) {
			// the old 64 MiB limit waited for these bytes
			_ = sc.writeRaw(lengthPrefix(DefaultMaxMessageSize + 1))
		}, nil, ReasonMessageTooLarge, wire.ErrTooLarge},
		{"4 GiB length", func(sc *serverConn) {
			_ = sc.writeRaw(lengthPrefix(0xffffffff))
		}, nil, ReasonMessageTooLarge, wire.ErrTooLarge},
		{"message over WithMaxMessageSize", func(sc *serverConn) {
			p := bytes.Repeat([]byte("x"), 2000)
			_ = sc.send(&wire.Message{Type: wire.TypeEvent, Flags: wire.FlagPayload, Payload: p})
		}, []Option{WithMaxMessageSize(1000)}, ReasonMessageTooLarge, wire.ErrTooLarge},
		{"garbage", func(sc *serverConn) {
			_ = sc.writeRaw([]byte("Welcome to my shell!\r\n$ "))
		}, nil, ReasonMalformedMessage, wire.ErrBadMagic},
		{"frames that do not decode", func(sc *serverConn) {
			_ = sc.writeRaw(append(lengthPrefix(4), 200, 1, 2, 3))
		}, nil, ReasonMalformedMessage, wire.ErrMalformed},
		{"a million empty frames", func(sc *serverConn) {
			body := bytes.Repeat([]byte{0}, 1<<20)
			_ = sc.writeRaw(append(lengthPrefix(uint32(len(body))), body...))
		}, nil, ReasonMalformedMessage, wire.ErrBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			srv := newFakeServer(t, func(sc *serverConn) {
				if n.Add(1) > 1 {
					echoHandler(sc) // later connections: a sane broker
					return
				}
				go sc.serveLoop(func(*wire.Message) {})
				tt.bad(sc)
			})
			c := dial(t, srv, tt.opts...)
			ctx := testCtx(t)
			err := c.RPC(ctx, "pending", nil, nil)
			var pe *ProtocolError
			if !errors.Is(err, ErrDisconnected) || !errors.As(err, &pe) || pe.Reason != tt.reason || !errors.Is(err, tt.cause) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("RPC: %v; want ErrDisconnected with a ProtocolError %s wrapping %v", err, tt.reason, tt.cause)
			}
			if pe.URI != c.URI() {
				t.Errorf("ProtocolError.URI = %q", pe.URI)
			}
			<-c.Done()
			if got := ProtocolReason(c.Err()); got != tt.reason {
				t.Errorf("ProtocolReason(Err) = %q (%v)", got, c.Err())
			}
			c2 := dial(t, srv, tt.opts...)
			var out map[string]int
			if err := c2.RPC(ctx, "echo", map[string]int{"ok": 1}, &out); err != nil || out["ok"] != 1 {
				t.Fatalf("new Conn to a sane broker: %v, %v", out, err)
			}
		})
	}
}

func TestProtocolReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrDisconnected, ""},
		{&ProtocolError{Reason: ReasonBrokerUnresponsive, Err: errors.New("x")}, ReasonBrokerUnresponsive},
	} {
		if got := ProtocolReason(tt.err); got != tt.want {
			t.Errorf("ProtocolReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
