package flux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// pingCounter counts the keepalive requests a fake server saw.
type pingCounter struct{ n atomic.Int32 }

// answerPings answers broker.ping as flux-core's broker does (the request
// object with route, userid and rolemask added) and echoes the rest.
func (pc *pingCounter) answer(sc *serverConn, m *wire.Message) {
	if m.Topic == KeepaliveTopic {
		pc.n.Add(1)
	}
	if m.Flags&wire.FlagNoResponse != 0 {
		return
	}
	_ = sc.send(wire.NewResponse(m, m.Payload))
}

// TestKeepalive: with WithKeepalive the Conn pings its broker; a broker
// that answers (even with an error) keeps the Conn; one that stops
// answering, a stalled pipe, or an answer stuck behind a message that
// drips in a byte at a time ends it with a *ProtocolError
// (ReasonBrokerUnresponsive) that pending calls see too; a new Conn to a
// sane broker works.
func TestKeepalive(t *testing.T) {
	const interval, timeout = 20 * time.Millisecond, 300 * time.Millisecond
	dripPrefix := binary.BigEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, wire.StreamMagic), 1000)
	tests := []struct {
		name string
		// serve handles the first connection; later ones get an
		// answering broker
		serve func(t *testing.T, sc *serverConn, pc *pingCounter, trouble <-chan struct{})
		stall bool // stall the stream when trouble starts
		dies  bool
	}{
		{"broker answers", func(t *testing.T, sc *serverConn, pc *pingCounter, _ <-chan struct{}) {
			sc.serveLoop(func(m *wire.Message) { pc.answer(sc, m) })
		}, false, false},
		{"broker answers pings with an error", func(t *testing.T, sc *serverConn, pc *pingCounter, _ <-chan struct{}) {
			sc.serveLoop(func(m *wire.Message) {
				if m.Topic == KeepaliveTopic {
					pc.n.Add(1)
					_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENOSYS), ""))
					return
				}
				pc.answer(sc, m)
			})
		}, false, false},
		{"broker stops answering", func(t *testing.T, sc *serverConn, pc *pingCounter, trouble <-chan struct{}) {
			sc.serveLoop(func(m *wire.Message) {
				select {
				case <-trouble:
					return // reads, never answers
				default:
					pc.answer(sc, m)
				}
			})
		}, false, true},
		{"stalled pipe", func(t *testing.T, sc *serverConn, pc *pingCounter, _ <-chan struct{}) {
			sc.serveLoop(func(m *wire.Message) { pc.answer(sc, m) })
		}, true, true},
		{"slow drip", func(t *testing.T, sc *serverConn, pc *pingCounter, trouble <-chan struct{}) {
			var once sync.Once
			sc.serveLoop(func(m *wire.Message) {
				select {
				case <-trouble:
					once.Do(func() {
						// a 1000-byte message, one byte every 50ms
						go func() {
							_ = sc.writeRaw(dripPrefix)
							for range 1000 {
								if sc.writeRaw([]byte{0}) != nil {
									return
								}
								time.Sleep(50 * time.Millisecond)
							}
						}()
					})
				default:
					pc.answer(sc, m)
				}
			})
		}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				first   atomic.Bool
				pc      pingCounter
				trouble = make(chan struct{})
			)
			srv := newFakeServer(t, func(sc *serverConn) {
				if first.CompareAndSwap(false, true) {
					tt.serve(t, sc, &pc, trouble)
					return
				}
				var sane pingCounter
				sc.serveLoop(func(m *wire.Message) { sane.answer(sc, m) })
			})
			dialer := fluxtest.SelectedDialer()
			if dialer == nil {
				dialer = func(ctx context.Context, uri string) (io.ReadWriteCloser, error) { return dialLocal(ctx, uri) }
			}
			stallDialer, staller := fluxtest.Stallable(dialer)
			c, err := Dial(testCtx(t), srv.uri, WithDialer(stallDialer), WithKeepalive(interval, timeout))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			waitFor(t, func() bool { return pc.n.Load() >= 3 }) // pings answered meanwhile
			if err := c.RPC(testCtx(t), "echo", nil, nil); err != nil {
				t.Fatal(err)
			}
			close(trouble)
			if tt.stall {
				staller.Stall()
			}
			if !tt.dies {
				n := pc.n.Load()
				waitFor(t, func() bool { return pc.n.Load() >= n+5 })
				if err := c.Err(); err != nil {
					t.Fatalf("Conn ended: %v", err)
				}
				return
			}
			pending := make(chan error, 1)
			go func() { pending <- c.RPC(testCtx(t), "never-answered", nil, nil) }()
			select {
			case <-c.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the Conn did not notice its broker stopped answering")
			}
			if got := ProtocolReason(c.Err()); got != ReasonBrokerUnresponsive || !errors.Is(c.Err(), ErrDisconnected) {
				t.Fatalf("Err = %v", c.Err())
			}
			if err := recvTimeout(t, pending); ProtocolReason(err) != ReasonBrokerUnresponsive {
				t.Errorf("pending RPC: %v", err)
			}
			c2 := dial(t, srv, WithKeepalive(interval, timeout))
			if err := c2.RPC(testCtx(t), "echo", nil, nil); err != nil {
				t.Fatalf("new Conn to a sane broker: %v", err)
			}
		})
	}
}

// TestKeepaliveStoppedRelay: a relay process stopped with SIGSTOP (a
// frozen container, a stuck kubectl exec) is noticed by the keepalive.
func TestKeepaliveStoppedRelay(t *testing.T) {
	var pc pingCounter
	srv := newFakeServer(t, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) { pc.answer(sc, m) })
	})
	var relay *os.Process
	d := func(ctx context.Context, uri string) (io.ReadWriteCloser, error) {
		rwc, err := fluxtest.DialProcess(ctx, uri)
		if err == nil {
			relay, _ = os.FindProcess(rwc.(interface{ Pid() int }).Pid())
		}
		return rwc, err
	}
	c, err := Dial(testCtx(t), srv.uri, WithDialer(d), WithKeepalive(20*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, func() bool { return pc.n.Load() >= 2 })
	if err := relay.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = relay.Signal(syscall.SIGCONT) }()
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("a stopped relay went unnoticed")
	}
	if got := ProtocolReason(c.Err()); got != ReasonBrokerUnresponsive {
		t.Fatalf("Err = %v", c.Err())
	}
}

// TestStreamOverflow: a Stream whose responses come faster than Recv
// takes them holds at most the WithStreamQueueBytes bound; beyond it the
// Stream ends with a *ProtocolError (ReasonStreamOverflow), the service
// gets the stream's cancel request, and the Conn and its other calls go
// on. A Stream whose reader keeps up is not affected.
// readerWindow is how many responses TestStreamOverflow's reader that
// keeps up lets the server send ahead of it.
const readerWindow = 1000

func TestStreamOverflow(t *testing.T) {
	tests := []struct {
		name      string
		bound     int
		responses int
		size      int
		recvFirst bool // Recv everything as it comes
		overflow  bool
	}{
		// 2 MiB through a 1 MiB queue: the server stays at most
		// readerWindow responses ahead of Recv (about 0.5 MiB queued)
		{"reader keeps up", 1 << 20, 4000, 256, true, false},
		{"endless stream, nobody reads", 64 << 10, 5000, 1 << 10, false, true},
		{"empty responses, nobody reads", 64 << 10, 5000, 0, false, true},
		{"within the bound", 64 << 10, 20, 1 << 10, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cancels := make(chan uint32, 10)
			sent := make(chan struct{})
			// A reader that keeps up: each response is sent only while
			// fewer than readerWindow are unread, so the test does not
			// depend on how the goroutines are scheduled.
			var credit chan struct{}
			if tt.recvFirst {
				credit = make(chan struct{}, readerWindow)
			}
			srv := newFakeServer(t, func(sc *serverConn) {
				sc.serveLoop(func(m *wire.Message) {
					switch m.Topic {
					case "flood":
						go func() {
							defer close(sent)
							p := append(bytes.Repeat([]byte("x"), tt.size), 0)
							for range tt.responses {
								if credit != nil {
									credit <- struct{}{}
								}
								if sc.send(wire.NewResponse(m, p)) != nil {
									return
								}
							}
							_ = sc.send(wire.NewErrorResponse(m, uint32(syscall.ENODATA), ""))
						}()
					case "flood-cancel":
						var req struct{ Matchtag uint32 }
						_ = m.DecodeJSON(&req)
						cancels <- req.Matchtag
					default:
						_ = sc.send(wire.NewResponse(m, m.Payload))
					}
				})
			})
			c := dial(t, srv, WithStreamQueueBytes(tt.bound))
			ctx := testCtx(t)
			s, err := c.Stream(ctx, "flood", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got := 0
			if tt.recvFirst {
				for {
					var b []byte
					if err := s.Recv(&b); err != nil {
						if err != io.EOF {
							t.Fatalf("Recv: %v", err)
						}
						break
					}
					got++
					<-credit
				}
				if got != tt.responses {
					t.Fatalf("received %d of %d", got, tt.responses)
				}
				return
			}
			<-sent
			// every response has been sent: wait until they are read
			if err := c.RPC(ctx, "echo", nil, nil); err != nil {
				t.Fatalf("the Conn's other calls: %v", err)
			}
			c.mu.Lock()
			queued, n := s.cl.queued, len(s.cl.queue)
			c.mu.Unlock()
			if queued > tt.bound {
				t.Errorf("stream queue holds %d bytes, bound %d", queued, tt.bound)
			}
			for {
				var b []byte
				err = s.Recv(&b)
				if err != nil {
					break
				}
				got++
			}
			if !tt.overflow {
				if err != io.EOF || got != tt.responses {
					t.Fatalf("got %d responses, then %v", got, err)
				}
				return
			}
			if ProtocolReason(err) != ReasonStreamOverflow || !errors.Is(err, ErrProtocol) {
				t.Fatalf("Recv after overflow: %v (%d queued, %d received)", err, n, got)
			}
			if tag := recvTimeout(t, cancels); tag != s.Matchtag() {
				t.Errorf("cancel for matchtag %d, want %d", tag, s.Matchtag())
			}
			if c.Err() != nil {
				t.Fatalf("the Conn ended: %v", c.Err())
			}
		})
	}
}
