package flux

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// A Handler receives the responses to a request made with StartRPC or
// StartStream. It is called on the Conn's reader goroutine, one response
// at a time and in order, so it must return quickly and must never wait
// for anything that the reader goroutine delivers (a response to an RPC
// on the same Conn, say); starting further requests with StartRPC or
// StartStream from a Handler is fine, as they do not wait.
//
// payload is a response's JSON payload without flux-core's NUL
// terminator (nil if the response has none); the Handler may keep it.
// err is nil for a successful response. The last call has a non-nil err:
// for StartRPC the one call carries either the response (err nil) or the
// error; a stream's responses (err nil) are followed by exactly one call
// with io.EOF at the normal end of the stream (ENODATA), an *Error if the
// service ended it with another errno, or an error matching ErrClosed or
// ErrDisconnected if the Conn ended first.
type Handler func(payload []byte, err error)

// StartRPC sends a request to topic without waiting: h is called once,
// on the reader goroutine, with the response or the error (see Handler).
// req is as for RPC. StartRPC returns an error, and never calls h, if the
// request could not be made (the Conn already ended, ctx is done, req
// does not encode); ctx bounds only that. Queued requests are written by
// the Conn's writer goroutine, several to a system call when they come
// faster than the socket takes them.
func (c *Conn) StartRPC(ctx context.Context, topic string, req any, h Handler, opts ...RPCOption) error {
	_, err := c.start(ctx, topic, req, false, h, opts)
	return err
}

// StartStream sends a streaming request to topic without waiting: h is
// called on the reader goroutine with each response and then once with
// the end of the stream (see Handler). It returns cancel, which asks the
// service to end the stream (a NORESPONSE request {"matchtag": M} to
// "<topic>-cancel" or the CancelTopic option, sent once and only while
// the stream is open); h still receives what the service sends until the
// stream ends, normally ENODATA. If ctx can be done, its end calls cancel.
// Errors are as for StartRPC.
func (c *Conn) StartStream(ctx context.Context, topic string, req any, h Handler, opts ...RPCOption) (cancel func(), err error) {
	return c.start(ctx, topic, req, true, h, opts)
}

func (c *Conn) start(ctx context.Context, topic string, req any, stream bool, h Handler, opts []RPCOption) (func(), error) {
	if h == nil {
		return nil, fmt.Errorf("flux: %s: nil Handler", topic)
	}
	m, o, err := c.newRequest(topic, req, 0, opts)
	if err != nil {
		return nil, err
	}
	if stream {
		m.Flags |= wire.FlagStreaming
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("flux: %s: %w", topic, err)
	}
	// A stream whose context can end is cancelled by that end: the
	// AfterFunc is registered once the request is queued and dropped when
	// the stream ends, which may happen first.
	var ctxCancel *afterCancel
	if stream && ctx.Done() != nil {
		ctxCancel = &afterCancel{}
		inner := h
		h = func(p []byte, err error) {
			inner(p, err)
			if err != nil {
				ctxCancel.end()
			}
		}
	}
	cl, tag, err := c.registerHandler(stream, topic, h)
	if err != nil {
		return nil, fmt.Errorf("flux: %s: %w", topic, err)
	}
	m.Aux2 = tag
	if err := c.enqueue(m); err != nil {
		if c.unregister(tag, cl) {
			return nil, fmt.Errorf("flux: %s: %w", topic, err)
		}
		// The Conn ended after the call was registered: the reader
		// goroutine tells h, as for any call pending at the end.
	}
	if !stream {
		return nil, nil
	}
	explicit := o.cancelTopic // "" for the default: made at cancel time
	cancel := func() { c.cancelHandler(cl, tag, rpcOptions{cancelTopic: explicit}.cancelFor(topic)) }
	if ctxCancel != nil {
		ctxCancel.set(context.AfterFunc(ctx, cancel))
	}
	return cancel, nil
}

// afterCancel holds a stream's context.AfterFunc registration so that the
// stream's end can drop it, whichever of the two comes first.
type afterCancel struct {
	mu    sync.Mutex
	stop  func() bool
	ended bool
}

// set records the registration, dropping it at once if the stream ended.
func (a *afterCancel) set(stop func() bool) {
	a.mu.Lock()
	ended := a.ended
	if !ended {
		a.stop = stop
	}
	a.mu.Unlock()
	if ended {
		stop()
	}
}

// end drops the registration, if any, once the stream ended.
func (a *afterCancel) end() {
	a.mu.Lock()
	a.ended = true
	stop := a.stop
	a.stop = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// registerHandler is register for a call whose responses go to h.
func (c *Conn) registerHandler(stream bool, topic string, h Handler) (*call, uint32, error) {
	cl := &call{stream: stream, fn: h, topic: topic}
	tag, err := c.registerCall(cl)
	return cl, tag, err
}

// cancelHandler queues the cancel request of a handler stream, once, if
// the stream is still open.
func (c *Conn) cancelHandler(cl *call, tag uint32, cancelTopic string) {
	c.mu.Lock()
	skip := cl.final || cl.cancelSent || c.err != nil
	cl.cancelSent = true
	c.mu.Unlock()
	if skip {
		return
	}
	m, _, err := c.newRequest(cancelTopic, map[string]uint32{"matchtag": tag}, wire.MatchtagNone, nil)
	if err != nil {
		return
	}
	m.Flags |= wire.FlagNoResponse
	// An error means the Conn ended, which ends the stream anyway.
	_ = c.enqueue(m)
}

// deliver hands a response to its call's Handler (reader goroutine only).
func deliver(cl *call, m *wire.Message) {
	if e := m.Errnum(); e != 0 {
		if cl.stream && e == uint32(syscall.ENODATA) {
			cl.fn(nil, io.EOF)
			return
		}
		cl.fn(nil, &Error{Errno: syscall.Errno(e), Message: m.PayloadString(), Topic: cl.topic})
		return
	}
	var p []byte
	if m.Flags&wire.FlagPayload != 0 {
		p = m.Payload
		if n := len(p); n > 0 && p[n-1] == 0 {
			p = p[:n-1]
		}
	}
	cl.fn(p, nil)
}

// The write queue is a list of chunks holding framed messages; the writer
// goroutine hands them all to one writev. Chunks are recycled, so queueing
// many requests at once (a burst of submissions) neither copies a growing
// buffer nor keeps a large one afterwards.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// enqueue frames m onto the write queue and wakes the writer goroutine.
// It never blocks; it fails if the Conn ended or m cannot be framed.
func (c *Conn) enqueue(m *wire.Message) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	size, err := m.EncodedSize()
	if err != nil {
		return err
	}
	need := wire.PrefixSize + size
	c.qmu.Lock()
	wake := len(c.outq) == 0
	n := len(c.outq)
	if n == 0 || cap(c.outq[n-1])-len(c.outq[n-1]) < need {
		var b []byte
		if need > chunkSize {
			b = make([]byte, 0, need)
		} else {
			b = (*chunkPool.Get().(*[]byte))[:0]
		}
		c.outq = append(c.outq, b)
		n++
	}
	c.outq[n-1], err = wire.AppendFramed(c.outq[n-1], m)
	c.qmu.Unlock()
	if err != nil {
		return err
	}
	if c.rc != nil && c.inHandler.Load() {
		// Most likely queued by a Handler on the reader goroutine, which
		// writes it right after the Handler (flushFromReader): cheaper
		// than waking the writer goroutine. Any other goroutine queueing
		// in that instant is written then too. If the Handler returned
		// meanwhile, the reader may have looked at flushWanted before we
		// set it: then wake the writer (a needless wake-up is harmless).
		c.flushWanted.Store(true)
		if c.inHandler.Load() {
			return nil
		}
		wake = true
	}
	if wake {
		c.wakeWriter()
	}
	return nil
}

func (c *Conn) wakeWriter() {
	select {
	case c.qready <- struct{}{}:
	default:
	}
}

// flushFromReader writes the queue from the reader goroutine, which must
// not block: one non-blocking writev; what the socket does not take at
// once is left at the head of the queue for the writer goroutine.
func (c *Conn) flushFromReader() {
	select {
	case c.wsem <- struct{}{}:
	default:
		// a write is in progress; the writer goroutine takes the rest
		c.wakeWriter()
		return
	}
	defer func() { <-c.wsem }()
	c.qmu.Lock()
	chunks := c.outq
	c.outq = nil
	c.qmu.Unlock()
	if len(chunks) == 0 {
		return
	}
	total := 0
	for _, b := range chunks {
		total += len(b)
	}
	n, err := tryWritev(c.rc, chunks)
	if err != nil {
		c.fail(fmt.Errorf("%w: write failed after %d of %d bytes: %w", ErrDisconnected, n, total, err))
		return
	}
	// put back what was not written, in front of what came meanwhile;
	// wsem is held, so nothing was written in between
	var rest [][]byte
	for i, b := range chunks {
		if n >= len(b) {
			n -= len(b)
			recycle(b)
			continue
		}
		rest = append(rest, b[n:])
		rest = append(rest, chunks[i+1:]...)
		break
	}
	if len(rest) == 0 {
		return
	}
	c.qmu.Lock()
	c.outq = append(rest, c.outq...)
	c.qmu.Unlock()
	c.wakeWriter()
}

// recycle returns a chunk to the pool if it is one of the pool's.
func recycle(b []byte) {
	if cap(b) == chunkSize {
		b = b[:0]
		chunkPool.Put(&b)
	}
}

// writeLoop is the writer goroutine: it writes what enqueue queued, all
// that is queued in one writev, until the Conn ends. A failed write ends
// the Conn.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	var (
		spare [][]byte        // the previous queue's slice, for reuse
		iov   net.Buffers     // what writev consumes
		vecs  []syscall.Iovec // rawWritev's scratch space
		rc    = c.rc
	)
	for {
		select {
		case <-c.qready:
		case <-c.done:
			return
		}
		// serialised with write, which callers of RPC, Stream and Send
		// use, and with flushFromReader: wsem is taken before the queue,
		// so that what flushFromReader puts back goes out first
		select {
		case c.wsem <- struct{}{}:
		case <-c.done:
			return
		}
		// The queue's slice and spare swap: from here chunks is the
		// writer's alone (enqueue appends to the other), so it becomes
		// the next spare whatever happens.
		c.qmu.Lock()
		chunks := c.outq
		c.outq = spare
		c.qmu.Unlock()
		spare = chunks[:0]
		if len(chunks) == 0 {
			<-c.wsem
			continue
		}
		// iov is consumed by the write: the chunks stay in chunks
		iov = append(iov[:0], chunks...)
		total := 0
		for _, b := range chunks {
			total += len(b)
		}
		var (
			n   int64
			err error
		)
		if rc != nil {
			var wrote int
			wrote, vecs, err = rawWritev(rc, iov, vecs)
			n = int64(wrote)
		} else {
			n, err = iov.WriteTo(c.nc)
		}
		<-c.wsem
		if err != nil {
			c.fail(fmt.Errorf("%w: write failed after %d of %d bytes: %w", ErrDisconnected, n, total, err))
			return
		}
		for i, b := range chunks {
			recycle(b)
			chunks[i] = nil
		}
	}
}
