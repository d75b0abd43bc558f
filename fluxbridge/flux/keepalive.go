package flux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// KeepaliveTopic is the request a Conn's keepalive sends: the broker's
// own ping service (flux-core src/broker/ping.c, registered for the
// "broker" service), which every role may call (FLUX_ROLE_ALL: guests
// too), costs the broker one JSON echo, and needs no module. It answers
// the request's JSON object with "route", "userid" and "rolemask" added.
const KeepaliveTopic = "broker.ping"

// Recommended keepalive settings: a broker that has not answered a ping
// for 10s after at most 15s of quiet is declared gone.
const (
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
)

type keepaliveOptions struct {
	interval, timeout time.Duration
}

// WithKeepalive makes the Conn check that its broker still answers: every
// interval after the previous answer it sends a KeepaliveTopic request,
// and if no answer comes within timeout (a stopped relay process, a
// stalled pipe, a hung broker, or an answer stuck behind a message that
// drips in a byte at a time) the Conn ends with ErrDisconnected wrapping
// a *ProtocolError with ReasonBrokerUnresponsive, so that its owner sees
// Done() and can dial again. Any answer counts, an error response too
// (the broker is there). interval <= 0 turns the keepalive off (the
// default); timeout <= 0 means DefaultKeepaliveTimeout. It costs timers,
// not a goroutine: the ping's answer is handled on the reader goroutine.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) {
		if timeout <= 0 {
			timeout = DefaultKeepaliveTimeout
		}
		o.keepalive = keepaliveOptions{interval: interval, timeout: timeout}
	}
}

// keepalive is a Conn's liveness check (WithKeepalive).
type keepalive struct {
	c    *Conn
	opts keepaliveOptions

	mu      sync.Mutex
	next    *time.Timer // the next ping
	expire  *time.Timer // the deadline of the ping in flight
	seq     int
	stopped bool
}

// startKeepalive arms c's keepalive if o asks for one.
func (c *Conn) startKeepalive(o keepaliveOptions) {
	if o.interval <= 0 {
		return
	}
	k := &keepalive{c: c, opts: o}
	c.ka = k
	k.mu.Lock()
	k.next = time.AfterFunc(o.interval, k.ping)
	k.mu.Unlock()
}

// stop disarms the keepalive (the Conn ended).
func (k *keepalive) stop() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	if k.next != nil {
		k.next.Stop()
	}
	if k.expire != nil {
		k.expire.Stop()
	}
}

// ping sends one keepalive request (on the next timer's goroutine).
func (k *keepalive) ping() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.seq++
	seq := k.seq
	var answered bool // guarded by k.mu
	sent := time.Now()
	k.expire = time.AfterFunc(k.opts.timeout, func() {
		k.mu.Lock()
		late := !answered && !k.stopped
		k.mu.Unlock()
		if late {
			k.c.fail(fmt.Errorf("%w: %w", ErrDisconnected, &ProtocolError{URI: k.c.uri, Reason: ReasonBrokerUnresponsive,
				Err: fmt.Errorf("no answer to %s (seq %d) within %v", KeepaliveTopic, seq, k.opts.timeout)}))
		}
	})
	k.mu.Unlock()
	err := k.c.StartRPC(context.Background(), KeepaliveTopic, map[string]int{"seq": seq}, func(_ []byte, err error) {
		var fe *Error
		if err != nil && !errors.As(err, &fe) {
			return // the Conn ended
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		answered = true
		k.expire.Stop()
		if !k.stopped {
			k.c.log.V(2).Info("keepalive", "seq", seq, "rtt", time.Since(sent))
			k.next.Reset(k.opts.interval)
		}
	})
	if err != nil { // the Conn ended
		k.stop()
	}
}
