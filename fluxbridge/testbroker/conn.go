package testbroker

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// Roles, from flux-core src/common/libflux/message.h (FLUX_ROLE_*).
const (
	roleOwner uint32 = 1
	roleUser  uint32 = 2
	roleLocal uint32 = 4
)

// conn is one client connection: a reader goroutine that dispatches
// requests, and a writer goroutine that drains an unbounded outbox so that
// posting an event never blocks on a slow client.
type conn struct {
	s  *Server
	nc *net.UnixConn
	// Credentials from SO_PEERCRED and the instance's policy
	// (src/modules/connector-local/local.c client_authenticate).
	uid      uint32
	rolemask uint32

	mu     sync.Mutex
	out    [][]byte
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func (s *Server) acceptLoop(ln *net.UnixListener) {
	defer s.connWG.Done()
	for {
		nc, err := ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error(err, "accept")
			}
			return
		}
		s.accept(nc)
	}
}

// accept authenticates a new connection and writes the accept byte: 0, or
// an errno before closing (src/common/librouter/usock.c).
func (s *Server) accept(nc *net.UnixConn) {
	uid, err := peerUID(nc)
	if err != nil {
		s.log.Error(err, "peer credentials")
		_, _ = nc.Write([]byte{byte(syscall.EPERM)})
		_ = nc.Close()
		return
	}
	s.mu.Lock()
	if s.state != srvRunning {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	reject := s.connectErr
	var rolemask uint32
	switch {
	case uid == s.owner:
		rolemask = roleOwner | roleLocal
	case s.opts.AllowGuests:
		rolemask = roleUser | roleLocal
	default:
		reject = syscall.EPERM
	}
	if reject != 0 {
		s.mu.Unlock()
		s.log.V(1).Info("connection refused", "uid", uid, "errno", int(reject))
		_, _ = nc.Write([]byte{byte(reject)})
		_ = nc.Close()
		return
	}
	c := &conn{
		s:        s,
		nc:       nc,
		uid:      uid,
		rolemask: rolemask,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	// The accept byte goes first, before any message the writer sends.
	c.out = append(c.out, []byte{0})
	s.conns[c] = struct{}{}
	s.connWG.Add(2)
	s.mu.Unlock()
	c.signal()
	go c.readLoop()
	go c.writeLoop()
}

// readLoop reads requests until the connection fails or is closed, then
// drops the connection (its watches end silently, as on a real disconnect).
func (c *conn) readLoop() {
	defer c.s.connWG.Done()
	r := wire.NewReader(bufio.NewReaderSize(c.nc, 64<<10), c.s.wireMaxSize())
	for {
		m, err := r.ReadMessage()
		if err != nil {
			c.s.mu.Lock()
			c.s.dropConnLocked(c)
			c.s.mu.Unlock()
			return
		}
		c.s.handle(c, m)
	}
}

// writeLoop writes queued messages in order until the connection closes.
func (c *conn) writeLoop() {
	defer c.s.connWG.Done()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch := c.out
		c.out = nil
		c.mu.Unlock()
		if c.s.hostileMode() == HostileSlowDrip {
			for _, b := range batch {
				if err := c.drip(b); err != nil {
					c.s.mu.Lock()
					c.s.dropConnLocked(c)
					c.s.mu.Unlock()
					return
				}
			}
			continue
		}
		if c.s.getResponseDelay() <= 0 {
			// one writev for the whole batch
			bufs := net.Buffers(batch)
			if _, err := bufs.WriteTo(c.nc); err != nil {
				c.s.mu.Lock()
				c.s.dropConnLocked(c)
				c.s.mu.Unlock()
				return
			}
			continue
		}
		for _, b := range batch {
			if d := c.s.getResponseDelay(); d > 0 && len(b) > 1 {
				t := time.NewTimer(d)
				select {
				case <-c.done:
					t.Stop()
					return
				case <-t.C:
				}
			}
			if _, err := c.nc.Write(b); err != nil {
				c.s.mu.Lock()
				c.s.dropConnLocked(c)
				c.s.mu.Unlock()
				return
			}
		}
	}
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// send queues m for the writer. It never blocks; a closed connection
// drops the message.
func (c *conn) send(m *wire.Message) {
	b, err := wire.AppendFramed(nil, m)
	if err != nil {
		c.s.log.Error(err, "encode response", "topic", m.Topic)
		return
	}
	c.queue(c.hostileFrame(m, b))
}

// queue queues framed bytes for the writer; a closed connection drops
// them.
func (c *conn) queue(b []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.out = append(c.out, b)
	c.mu.Unlock()
	c.signal()
}

// dropConnLocked closes c and forgets its watches, journal listeners and
// waiters. The caller holds s.mu.
func (s *Server) dropConnLocked(c *conn) {
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	c.mu.Lock()
	c.closed = true
	c.out = nil
	c.mu.Unlock()
	close(c.done)
	_ = c.nc.Close()
	s.disconnectLocked(c)
}
