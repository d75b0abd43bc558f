// Package flux is a pure-Go client connection to a flux-core broker: the
// accept byte, request/response RPCs matched by matchtag, streaming RPCs
// and their cancellation, and errors carrying the service's errno. The
// bytes are in fluxbridge/wire.
//
// The connection runs over the broker's local:// unix socket, or over any
// byte stream that carries the same bytes: what `flux relay PATH` speaks on
// its standard input and output. ssh:// runs that relay on a remote host
// through an SSH session (see SSHConfig), and WithDialer lets another
// package supply the stream (a Kubernetes pod exec, say).
//
// Behaviour follows flux-core 0.88: src/common/libflux/handle.c (default
// URI), src/common/libflux/connector_local.c and
// src/common/librouter/usock.c (connect and the accept byte),
// src/common/libflux/rpc.c (matchtags, NORESPONSE, streaming),
// src/connectors/ssh/ssh.c and src/cmd/builtin/relay.c (ssh://).
package flux

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

const (
	// EnvURI is the environment variable holding the default broker URI.
	EnvURI = "FLUX_URI"
	// DefaultURI is used when neither the caller nor $FLUX_URI names a
	// broker (flux-core handle.c get_local_uri with rundir /run/flux).
	DefaultURI = "local:///run/flux/local"

	// maxPending bounds outstanding RPCs on one Conn (matchtags in use).
	maxPending = 1 << 24
	// cancelTimeout bounds writing a stream's cancel request when the
	// caller gave no context (Stream.Close, a cancelled context).
	cancelTimeout = 10 * time.Second
	// readBufferSize is the size of the buffer between the socket and the
	// message decoder.
	readBufferSize = 64 << 10
)

// Option configures Dial.
type Option func(*options)

type options struct {
	log        logr.Logger
	maxSize    int
	queueBytes int
	keepalive  keepaliveOptions
	dialer     Dialer
	ssh        *SSHConfig
}

// WithLogger sets the logger (default: discard). Dropped and unexpected
// messages are logged at V(1).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = l } }

// DefaultMaxMessageSize is the largest encoded message a Conn accepts from
// its broker unless WithMaxMessageSize says otherwise: 4 MiB (see
// wire.DefaultMaxSize for what legitimately comes near it).
const DefaultMaxMessageSize = wire.DefaultMaxSize

// WithMaxMessageSize sets the largest encoded message the Conn accepts
// from the broker (n <= 0: DefaultMaxMessageSize). The length prefix of a
// message is checked before anything is allocated for it; a larger one
// ends the Conn with ErrDisconnected wrapping a *ProtocolError with
// ReasonMessageTooLarge (and wire.ErrTooLarge). A Conn holds at most about
// twice n for the message being read. This is the per-instance seam: an
// owner that trusts a broker with larger answers (huge job output lines
// read through this Conn) raises it for that broker only.
func WithMaxMessageSize(n int) Option {
	return func(o *options) {
		if n <= 0 {
			n = DefaultMaxMessageSize
		}
		o.maxSize = n
	}
}

// DefaultStreamQueueBytes is how much a Stream's queue of responses not
// yet taken by Recv may hold unless WithStreamQueueBytes says otherwise:
// 16 MiB.
const DefaultStreamQueueBytes = 16 << 20

// streamQueueOverhead is what a queued response counts for on top of its
// payload and topic (the Message and its slot in the queue), so that a
// flood of empty responses is bounded too.
const streamQueueOverhead = 256

// WithStreamQueueBytes bounds the responses a Stream holds that Recv has
// not taken yet (n <= 0: DefaultStreamQueueBytes): each counts its payload
// and topic plus 256 bytes. Responses arrive on the Conn's one reader
// goroutine, which must not wait for a slow Recv (every other call on the
// Conn, the keepalive among them, would wait too), so a Stream whose queue
// would exceed the bound ends instead: what it queued is dropped, Recv
// returns a *ProtocolError with ReasonStreamOverflow, the stream is
// cancelled at the service and its further responses are dropped. The
// Conn and its other calls go on. (StartStream's Handlers have no queue:
// they run on the reader goroutine.)
func WithStreamQueueBytes(n int) Option {
	return func(o *options) {
		if n <= 0 {
			n = DefaultStreamQueueBytes
		}
		o.queueBytes = n
	}
}

// RPCOption configures one RPC, Stream or Send.
type RPCOption func(*rpcOptions)

type rpcOptions struct {
	nodeid      uint32
	cancelTopic string // "": the default, see cancelFor
}

// cancelFor is the cancel topic of a stream to topic: CancelTopic's, or
// "<topic>-cancel", made only when asked for (a handler stream keeps o's
// until it is cancelled, and an executor keeps one per job it follows).
func (o rpcOptions) cancelFor(topic string) string {
	if o.cancelTopic != "" {
		return o.cancelTopic
	}
	return topic + "-cancel"
}

// NodeID sets the request's destination rank (default wire.NodeIDAny).
func NodeID(id uint32) RPCOption { return func(o *rpcOptions) { o.nodeid = id } }

// CancelTopic sets the topic a Stream sends its cancel request to
// (default "<topic>-cancel", e.g. job-info.eventlog-watch-cancel).
func CancelTopic(topic string) RPCOption { return func(o *rpcOptions) { o.cancelTopic = topic } }

// Conn is a connection to a broker. It is safe for concurrent use. One
// goroutine reads responses and routes them to callers by matchtag (or
// hands them to the Handler of a request made with StartRPC or
// StartStream), and one writes the requests those queue; both exit when
// the connection ends (Close or broker gone).
type Conn struct {
	uri string
	nc  io.ReadWriteCloser // the socket or stream
	// sameHost: the broker is on this host and the Conn is this process's
	// user there (a local:// URI dialled by Dial itself).
	sameHost bool
	dl       deadliner // nc's deadlines; nil if it has none
	log      logr.Logger

	wsem chan struct{} // write lock, held while writing one message
	wbuf []byte        // encoding buffer, guarded by wsem

	qmu    sync.Mutex    // guards outq
	outq   [][]byte      // chunks of framed messages queued by StartRPC/StartStream
	qready chan struct{} // cap 1: outq went from empty to non-empty
	// inHandler is set while the reader goroutine runs a Handler; a
	// request queued meanwhile sets flushWanted instead of waking the
	// writer goroutine, and the reader writes it itself (flushFromReader)
	// once the Handler returns.
	inHandler   atomic.Bool
	flushWanted atomic.Bool
	rc          syscall.RawConn // raw I/O (see rawConn); nil: the net package's

	mu      sync.Mutex
	pending map[uint32]*call // outstanding RPCs by matchtag
	next    uint32           // last matchtag handed out
	err     error            // why the Conn ended; nil while open

	queueBytes int // bound of a Stream's queue (WithStreamQueueBytes)
	ka         *keepalive

	done       chan struct{}  // closed when the Conn ends
	readerDone chan struct{}  // closed when the reader goroutine returns
	writerDone chan struct{}  // closed when the writer goroutine returns
	inflight   sync.WaitGroup // writes on a stream their callers gave up on (writeStream)
	// orphaned holds the handler calls that were pending when the Conn
	// ended; the reader goroutine tells them, so that a Handler is only
	// ever called from the reader goroutine.
	orphaned []*call
}

// call is one outstanding RPC or stream. Fields are guarded by Conn.mu.
type call struct {
	stream    bool
	queue     []*wire.Message
	notify    chan struct{} // cap 1: something was queued or the Conn ended
	final     bool          // last response received; matchtag freed
	abandoned bool          // nobody reads: drop responses until the final one
	// fn, when set, receives the responses on the reader goroutine
	// instead of queue (StartRPC, StartStream); topic is for its errors.
	fn         Handler
	topic      string
	cancelSent bool // a handler stream's cancel request was queued

	// A Stream's queue is bounded (WithStreamQueueBytes): queued is what
	// queue counts against Conn.queueBytes, err the overflow (returned
	// once set), cancelTopic where the overflow's cancel goes.
	queued      int
	err         error
	cancelTopic string
}

// Dial connects to the broker named by uri: "" means $FLUX_URI, then
// DefaultURI. local://PATH is the broker's unix socket (flux-core 0.88
// connector_local.c; for compatibility with older releases a PATH that is
// a directory means PATH/local). ssh://[USER@]HOST[:PORT]/PATH runs `flux
// relay /PATH` on HOST over SSH (see SSHConfig and WithSSH). With
// WithDialer, the Dialer opens the stream whatever the scheme. The
// broker's accept byte is read before Dial returns: non-zero is a
// *ConnectError.
func Dial(ctx context.Context, uri string, opts ...Option) (*Conn, error) {
	o := newOptions(opts)
	if uri == "" {
		uri = os.Getenv(EnvURI)
	}
	if uri == "" {
		uri = DefaultURI
	}
	var (
		rwc io.ReadWriteCloser
		err error
	)
	switch {
	case o.dialer != nil:
		rwc, err = o.dialer(ctx, uri)
	case strings.HasPrefix(uri, "ssh://"):
		rwc, err = dialSSH(ctx, uri, o.ssh)
	default:
		rwc, err = dialLocal(ctx, uri)
	}
	if err != nil {
		return nil, err
	}
	c, err := newConn(ctx, uri, rwc, o)
	if err != nil {
		return nil, err
	}
	c.sameHost = o.dialer == nil && !strings.HasPrefix(uri, "ssh://")
	return c, nil
}

// HostSocketDialer is implemented by a stream (given to DialStream, or
// returned by a Dialer) that can open connections to unix sockets on the
// host its broker runs on, as the user it reaches the broker as. The
// ssh:// stream is one.
type HostSocketDialer interface {
	DialHostSocket(ctx context.Context, path string) (net.Conn, error)
}

// ErrNoHostSocket is returned by DialHostSocket for a Conn whose stream
// cannot reach sockets on the broker's host.
var ErrNoHostSocket = errors.New("flux: the connection cannot reach sockets on the broker's host")

// DialHostSocket connects to the unix socket at path on the host the
// broker runs on, as the user the Conn is at the broker: for a local://
// URI, here; for ssh://, through the Conn's SSH connection as a forwarded
// unix-socket channel (OpenSSH's direct-streamlocal@openssh.com), so that
// the socket's server (munged, say) sees the SSH user, and no credential
// of this process is involved; for another stream, if it implements
// HostSocketDialer. Otherwise the error wraps ErrNoHostSocket. ctx bounds
// the connection's opening only.
func (c *Conn) DialHostSocket(ctx context.Context, path string) (net.Conn, error) {
	if d, ok := c.nc.(HostSocketDialer); ok {
		nc, err := d.DialHostSocket(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("flux: %s: dial host socket %s: %w", c.uri, path, err)
		}
		return nc, nil
	}
	if !c.sameHost {
		return nil, fmt.Errorf("flux: %s: dial host socket %s: %w", c.uri, path, ErrNoHostSocket)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("flux: %s: dial host socket: %w", c.uri, err)
	}
	return nc, nil
}

func newOptions(opts []Option) options {
	o := options{log: logr.Discard(), maxSize: DefaultMaxMessageSize, queueBytes: DefaultStreamQueueBytes}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// dialLocal connects to a local:// URI's unix socket.
func dialLocal(ctx context.Context, uri string) (net.Conn, error) {
	path, err := socketPath(uri)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("flux: dial %s: %w", uri, err)
	}
	return nc, nil
}

// newConn reads the accept byte from rwc and starts the Conn's goroutines;
// it closes rwc if the broker refused or the byte did not come.
func newConn(ctx context.Context, uri string, rwc io.ReadWriteCloser, o options) (*Conn, error) {
	dl, _ := rwc.(deadliner)
	if err := readAccept(ctx, rwc, dl, uri); err != nil {
		_ = rwc.Close()
		return nil, err
	}
	c := &Conn{
		uri:        uri,
		nc:         rwc,
		dl:         dl,
		log:        o.log.WithValues("uri", uri),
		wsem:       make(chan struct{}, 1),
		pending:    make(map[uint32]*call),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		qready:     make(chan struct{}, 1),
		queueBytes: o.queueBytes,
	}
	// Buffered: a burst of responses (a job's eventlog) costs one read
	// system call instead of two per message.
	var rd io.Reader = rwc
	if nc, ok := rwc.(net.Conn); ok {
		c.rc = rawConn(nc)
	}
	if c.rc != nil {
		rd = &rawReader{rc: c.rc}
	}
	c.startKeepalive(o.keepalive)
	go c.readLoop(wire.NewReader(bufio.NewReaderSize(rd, readBufferSize), o.maxSize))
	go c.writeLoop()
	return c, nil
}

func socketPath(uri string) (string, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return "", fmt.Errorf("%w: %q has no scheme", ErrUnsupportedScheme, uri)
	}
	if scheme != "local" {
		return "", fmt.Errorf("%w: %q in %q", ErrUnsupportedScheme, scheme+"://", uri)
	}
	if rest == "" {
		return "", fmt.Errorf("flux: %q names no socket path", uri)
	}
	if fi, err := os.Stat(rest); err == nil && fi.IsDir() {
		rest = filepath.Join(rest, "local")
	}
	return rest, nil
}

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// readAccept reads the byte the broker writes on accept (usock.c
// usock_conn_accept writes 0, usock_conn_reject an errno). On a stream
// without deadlines, ctx ending closes rwc to interrupt the read (Dial
// fails then anyway). A stream that ends before the byte and captures its
// remote end's standard error (StderrStream) has that put into the error.
func readAccept(ctx context.Context, rwc io.ReadWriteCloser, dl deadliner, uri string) error {
	interrupt := func() { _ = rwc.Close() }
	if dl != nil {
		if d, ok := ctx.Deadline(); ok {
			_ = dl.SetReadDeadline(d)
		}
		interrupt = func() { _ = dl.SetReadDeadline(aLongTimeAgo) }
	}
	stop := context.AfterFunc(ctx, interrupt)
	var b [1]byte
	n, err := rwc.Read(b[:])
	stop()
	if cerr := ctxErr(ctx, err); cerr != nil {
		return fmt.Errorf("flux: dial %s: waiting for accept: %w", uri, cerr)
	}
	if n == 0 {
		var cerr error = &ConnectError{URI: uri, Errno: syscall.ECONNRESET}
		if err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			cerr = fmt.Errorf("flux: dial %s: reading accept byte: %w", uri, err)
		}
		return withStderr(ctx, rwc, uri, cerr, stderrWait)
	}
	if b[0] != 0 {
		// Through a relay, a refusing broker makes the relay exit (it
		// writes its own accept byte only once connected): a non-zero
		// byte there is more likely output of something else, so say what
		// the remote wrote so far without waiting for it to exit.
		return withStderr(ctx, rwc, uri, &ConnectError{URI: uri, Errno: syscall.Errno(b[0])}, 0)
	}
	if dl != nil {
		return dl.SetReadDeadline(time.Time{})
	}
	return nil
}

// ctxErr returns ctx's error if ctx ended, or context.DeadlineExceeded if
// err is the socket deadline taken from ctx firing a moment before ctx's own
// timer.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return nil
}

// URI returns the URI the Conn was dialled with (after defaults).
func (c *Conn) URI() string { return c.uri }

// Done returns a channel closed when the Conn ends, by Close or because the
// broker went away.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the Conn is open, ErrClosed after Close, or an
// error matching ErrDisconnected (wrapping the cause) after the broker went
// away.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection. Pending RPCs and streams fail with
// ErrClosed (the Handlers of StartRPC and StartStream are called with it
// before Close returns). It waits for the reader and writer goroutines to
// exit. Closing a Conn that already ended is a no-op.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.readerDone
	<-c.writerDone
	c.inflight.Wait()
	return nil
}

// fail ends the Conn with err (first caller wins) and wakes every waiter.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	for tag, cl := range c.pending {
		if cl.fn != nil {
			c.orphaned = append(c.orphaned, cl)
		} else {
			signal(cl.notify)
		}
		delete(c.pending, tag)
	}
	c.mu.Unlock()
	c.ka.stop()
	// Done first: closing a stream may take a while (a relay process
	// that is stopped is waited for), and the owner should not wait to
	// learn that the Conn ended
	close(c.done)
	_ = c.nc.Close()
	if !errors.Is(err, ErrClosed) {
		c.log.Error(err, "connection to broker lost")
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *Conn) readLoop(r *wire.Reader) {
	defer close(c.readerDone)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			c.fail(fmt.Errorf("%w: %w", ErrDisconnected, c.readError(err)))
			c.tellOrphans()
			return
		}
		c.inHandler.Store(true)
		c.dispatch(m)
		c.inHandler.Store(false)
		if c.flushWanted.Swap(false) {
			c.flushFromReader()
		}
	}
}

// readError turns what the broker sent that this client refuses (a
// message over the size limit, bytes that are not flux messages) into a
// *ProtocolError; other read errors (the stream ended, the socket failed)
// are returned as they are.
func (c *Conn) readError(err error) error {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return &ProtocolError{URI: c.uri, Reason: ReasonMessageTooLarge, Err: err}
	case errors.Is(err, wire.ErrBadMagic), errors.Is(err, wire.ErrMalformed):
		return &ProtocolError{URI: c.uri, Reason: ReasonMalformedMessage, Err: err}
	}
	return err
}

// tellOrphans calls the Handlers that were waiting when the Conn ended
// with its error. Only the reader goroutine calls it, once, after fail.
func (c *Conn) tellOrphans() {
	c.mu.Lock()
	orphans, err := c.orphaned, c.err
	c.orphaned = nil
	c.mu.Unlock()
	for _, cl := range orphans {
		cl.fn(nil, fmt.Errorf("flux: %s: %w", cl.topic, err))
	}
}

// dispatch routes a response to its call. A non-streaming call gets one
// response; a stream gets responses until one carries an errno. Only then
// is the matchtag freed (rpc.c: a matchtag is not reused while a response
// may still arrive for it).
func (c *Conn) dispatch(m *wire.Message) {
	if m.Type != wire.TypeResponse {
		c.log.V(1).Info("dropping unexpected message", "type", m.Type.String(), "topic", m.Topic)
		return
	}
	tag := m.Matchtag()
	c.mu.Lock()
	cl := c.pending[tag]
	if cl == nil {
		c.mu.Unlock()
		c.log.V(1).Info("dropping response with unknown matchtag", "topic", m.Topic, "matchtag", tag)
		return
	}
	if !cl.stream || m.Errnum() != 0 {
		cl.final = true
		delete(c.pending, tag)
	}
	if cl.fn != nil {
		c.mu.Unlock()
		deliver(cl, m)
		return
	}
	if cl.abandoned {
		c.mu.Unlock()
		return
	}
	cost := len(m.Payload) + len(m.Topic) + streamQueueOverhead
	if cl.stream && !cl.final && cl.queued+cost > c.queueBytes {
		cancel := c.overflowLocked(cl, tag, cost)
		c.mu.Unlock()
		if cancel != nil {
			_ = c.enqueue(cancel) // an error means the Conn ended
		}
		return
	}
	cl.queued += cost
	cl.queue = append(cl.queue, m)
	signal(cl.notify)
	c.mu.Unlock()
}

// overflowLocked ends a Stream whose queue would exceed the bound (see
// WithStreamQueueBytes): its queue is dropped, its waiter gets a
// *ProtocolError and its further responses are dropped. It returns the
// cancel request for the service, to be queued once c.mu (held) is
// released, or nil.
func (c *Conn) overflowLocked(cl *call, tag uint32, cost int) *wire.Message {
	cl.err = &ProtocolError{URI: c.uri, Reason: ReasonStreamOverflow,
		Err: fmt.Errorf("%d responses (%d bytes with this one) not taken by Recv, bound %d", len(cl.queue), cl.queued+cost, c.queueBytes)}
	cl.queue, cl.queued = nil, 0
	cl.abandoned = true
	signal(cl.notify)
	c.log.Error(cl.err, "stream overflow: ending the stream", "matchtag", tag)
	if cl.cancelSent || cl.cancelTopic == "" {
		return nil
	}
	cl.cancelSent = true
	m, _, err := c.newRequest(cl.cancelTopic, map[string]uint32{"matchtag": tag}, wire.MatchtagNone, nil)
	if err != nil {
		return nil
	}
	m.Flags |= wire.FlagNoResponse
	return m
}

// register allocates a matchtag: the next one after the last handed out,
// skipping 0 and tags still in use, as flux-core's clients count up from 1.
func (c *Conn) register(stream bool, cancelTopic ...string) (*call, uint32, error) {
	cl := &call{stream: stream, notify: make(chan struct{}, 1)}
	if len(cancelTopic) > 0 {
		cl.cancelTopic = cancelTopic[0]
	}
	tag, err := c.registerCall(cl)
	return cl, tag, err
}

// registerCall allocates a matchtag for cl.
func (c *Conn) registerCall(cl *call) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) >= maxPending {
		return 0, fmt.Errorf("flux: %d RPCs outstanding, no matchtag free", len(c.pending))
	}
	for {
		c.next++
		if c.next == wire.MatchtagNone {
			continue
		}
		if _, used := c.pending[c.next]; !used {
			break
		}
	}
	c.pending[c.next] = cl
	return c.next, nil
}

// unregister frees a matchtag whose request was never sent, and reports
// whether it did (false: the Conn ended and took the call already).
func (c *Conn) unregister(tag uint32, cl *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[tag] == cl {
		delete(c.pending, tag)
		return true
	}
	return false
}

// abandon stops queueing responses for cl; its matchtag stays reserved
// until the final response arrives (or the Conn ends). A goroutine waiting
// for cl is woken and gets errAbandoned.
func (c *Conn) abandon(cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl.abandoned = true
	cl.queue, cl.queued = nil, 0
	signal(cl.notify)
}

// errAbandoned is what wait returns for a call abandoned while (or before)
// it waited; Stream.Recv turns it into ErrStreamClosed.
var errAbandoned = errors.New("flux: call abandoned")

// wait returns the next response for cl, or the Conn's error once cl has
// nothing queued and the Conn ended, or ctx's error, or errAbandoned once
// cl was abandoned. The Conn ending wakes it even when cl is no longer
// registered (its final response already arrived, or it was abandoned).
func (c *Conn) wait(ctx context.Context, cl *call) (*wire.Message, error) {
	for {
		c.mu.Lock()
		if cl.err != nil {
			err := cl.err
			c.mu.Unlock()
			return nil, err
		}
		if cl.abandoned {
			c.mu.Unlock()
			return nil, errAbandoned
		}
		if len(cl.queue) > 0 {
			m := cl.queue[0]
			cl.queue[0] = nil
			cl.queue = cl.queue[1:]
			cl.queued -= len(m.Payload) + len(m.Topic) + streamQueueOverhead
			c.mu.Unlock()
			return m, nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		c.mu.Unlock()
		select {
		case <-cl.notify:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// write sends one message. Writes are serialised; a write blocked by a
// full socket is interrupted by ctx. A write cut short after some bytes
// went out leaves the byte stream unusable, so it ends the Conn.
func (c *Conn) write(ctx context.Context, m *wire.Message) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
	if err := c.Err(); err != nil {
		<-c.wsem
		return err
	}
	buf, err := wire.AppendFramed(c.wbuf[:0], m)
	if err != nil {
		<-c.wsem
		return err
	}
	if cap(buf) <= 64<<10 {
		c.wbuf = buf[:0]
	}
	if c.dl == nil && ctx.Done() != nil {
		return c.writeStream(ctx, buf) // releases wsem when written
	}
	defer func() { <-c.wsem }()
	if ctx.Done() == nil {
		n, err := c.nc.Write(buf)
		return c.writeFailed(ctx, n, len(buf), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.dl.SetWriteDeadline(dl)
	}
	var (
		mu       sync.Mutex
		finished bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			_ = c.dl.SetWriteDeadline(aLongTimeAgo)
		}
	})
	n, err := c.nc.Write(buf)
	mu.Lock()
	finished = true
	mu.Unlock()
	stop()
	_ = c.dl.SetWriteDeadline(time.Time{})
	return c.writeFailed(ctx, n, len(buf), err)
}

func (c *Conn) writeFailed(ctx context.Context, n, total int, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctxErr(ctx, err); n == 0 && cerr != nil {
		return cerr
	}
	if cerr := c.Err(); cerr != nil {
		return cerr
	}
	c.fail(fmt.Errorf("%w: write failed after %d of %d bytes: %w", ErrDisconnected, n, total, err))
	return c.Err()
}

// requestPayload turns an RPC's req into a payload frame: nil means none;
// json.RawMessage and []byte are sent as given, with the NUL terminator
// flux-core expects appended unless present; anything else is marshalled.
func requestPayload(req any) ([]byte, error) {
	var raw []byte
	switch r := req.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		raw = r
	case []byte:
		raw = r
	default:
		return wire.JSONPayload(req)
	}
	if raw == nil {
		return nil, nil
	}
	if len(raw) > 0 && raw[len(raw)-1] == 0 {
		return raw, nil
	}
	out := make([]byte, len(raw)+1)
	copy(out, raw)
	return out, nil
}

// decodeResponse turns a response into an *Error or decodes its payload
// into resp (nil: ignored; a response without payload leaves resp as is).
// *[]byte and *json.RawMessage receive the payload's bytes without the NUL.
func decodeResponse(topic string, m *wire.Message, resp any) error {
	if e := m.Errnum(); e != 0 {
		return &Error{Errno: syscall.Errno(e), Message: m.PayloadString(), Topic: topic}
	}
	if resp == nil || m.Flags&wire.FlagPayload == 0 {
		return nil
	}
	switch r := resp.(type) {
	case *[]byte:
		*r = []byte(m.PayloadString())
		return nil
	case *json.RawMessage:
		// the message owns its payload (wire copies it out of the read
		// buffer) and is dropped after this: no copy needed
		*r = json.RawMessage(bytes.TrimSuffix(m.Payload, []byte{0}))
		return nil
	}
	if err := m.DecodeJSON(resp); err != nil {
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	return nil
}

func (c *Conn) newRequest(topic string, req any, tag uint32, opts []RPCOption) (*wire.Message, rpcOptions, error) {
	o := rpcOptions{nodeid: wire.NodeIDAny}
	for _, opt := range opts {
		opt(&o)
	}
	p, err := requestPayload(req)
	if err != nil {
		return nil, o, fmt.Errorf("flux: %s: %w", topic, err)
	}
	m := wire.NewRequest(topic, p, tag)
	m.Aux1 = o.nodeid
	return m, o, nil
}

// RPC sends a request to topic and waits for its response. req is
// marshalled to JSON (nil: no payload; json.RawMessage or []byte: sent as
// is), resp is a pointer to decode the response into (nil: ignored). An
// error response is an *Error. If ctx ends first RPC returns ctx's error;
// the matchtag stays reserved until the response arrives.
func (c *Conn) RPC(ctx context.Context, topic string, req, resp any, opts ...RPCOption) error {
	m, _, err := c.newRequest(topic, req, 0, opts)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	cl, tag, err := c.register(false)
	if err != nil {
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	m.Aux2 = tag
	if err := c.write(ctx, m); err != nil {
		if isInFlight(err) {
			// the request still goes out: keep its matchtag until the
			// response comes, and drop that
			c.abandon(cl)
		} else {
			c.unregister(tag, cl)
		}
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	r, err := c.wait(ctx, cl)
	if err != nil {
		c.abandon(cl)
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	return decodeResponse(topic, r, resp)
}

// Send sends a request that expects no response (FLUX_MSGFLAG_NORESPONSE,
// matchtag 0), e.g. a cancel.
func (c *Conn) Send(ctx context.Context, topic string, req any, opts ...RPCOption) error {
	m, _, err := c.newRequest(topic, req, wire.MatchtagNone, opts)
	if err != nil {
		return err
	}
	m.Flags |= wire.FlagNoResponse
	if err := c.write(ctx, m); err != nil {
		return fmt.Errorf("flux: %s: %w", topic, err)
	}
	return nil
}

// Stream sends a streaming request (FLUX_MSGFLAG_STREAMING, as flux_rpc
// with FLUX_RPC_STREAMING) and returns the Stream of its responses. When
// ctx ends, or on Close, the stream is cancelled at the service by sending
// {"matchtag": M} to the cancel topic with NORESPONSE.
func (c *Conn) Stream(ctx context.Context, topic string, req any, opts ...RPCOption) (*Stream, error) {
	m, o, err := c.newRequest(topic, req, 0, opts)
	if err != nil {
		return nil, err
	}
	m.Flags |= wire.FlagStreaming
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("flux: %s: %w", topic, err)
	}
	cancelTopic := o.cancelFor(topic)
	cl, tag, err := c.register(true, cancelTopic)
	if err != nil {
		return nil, fmt.Errorf("flux: %s: %w", topic, err)
	}
	m.Aux2 = tag
	if err := c.write(ctx, m); err != nil {
		if isInFlight(err) {
			// the request still goes out: drop what the service sends
			// and cancel the stream right after it
			c.abandon(cl)
			c.cancelHandler(cl, tag, cancelTopic)
		} else {
			c.unregister(tag, cl)
		}
		return nil, fmt.Errorf("flux: %s: %w", topic, err)
	}
	s := &Stream{c: c, cl: cl, ctx: ctx, topic: topic, cancelTopic: cancelTopic, tag: tag}
	s.stop = context.AfterFunc(ctx, func() { _ = s.cancel() })
	return s, nil
}

// Stream is the response side of a streaming RPC. Recv is meant for one
// goroutine; Close may be called from any.
type Stream struct {
	c           *Conn
	cl          *call
	ctx         context.Context
	topic       string
	cancelTopic string
	tag         uint32
	stop        func() bool

	mu         sync.Mutex
	cancelSent bool
	closed     bool
	term       error // returned by every Recv after the stream ended
}

// Matchtag returns the stream's matchtag.
func (s *Stream) Matchtag() uint32 { return s.tag }

// Recv waits for the next response and decodes it into resp (nil:
// ignored). It returns io.EOF at the normal end of the stream (ENODATA),
// an *Error if the service ended it with another errno, ErrClosed or
// ErrDisconnected if the Conn ended, ctx's error once the Stream's
// context ended, and ErrStreamClosed after Close. Close called from
// another goroutine while Recv waits wakes it with ErrStreamClosed (not
// io.EOF: the stream did not end, it was given up); responses not yet
// returned are dropped. Responses already received are delivered before a
// Conn error, and Conn.Close wakes a waiting Recv with ErrClosed.
func (s *Stream) Recv(resp any) error {
	s.mu.Lock()
	closed, term := s.closed, s.term
	s.mu.Unlock()
	if closed {
		return ErrStreamClosed
	}
	if term != nil {
		return term
	}
	if err := s.ctx.Err(); err != nil {
		s.c.abandon(s.cl)
		_ = s.cancel()
		err = fmt.Errorf("flux: %s: %w", s.topic, err)
		s.setTerm(err)
		return err
	}
	m, err := s.c.wait(s.ctx, s.cl)
	if err != nil {
		if errors.Is(err, errAbandoned) {
			return ErrStreamClosed
		}
		if s.ctx.Err() != nil {
			s.c.abandon(s.cl)
			_ = s.cancel()
		}
		err = fmt.Errorf("flux: %s: %w", s.topic, err)
		s.setTerm(err)
		return err
	}
	if m.Errnum() == uint32(syscall.ENODATA) {
		s.stop()
		s.setTerm(io.EOF)
		return io.EOF
	}
	if err := decodeResponse(s.topic, m, resp); err != nil {
		var fe *Error
		if errors.As(err, &fe) {
			s.stop()
			s.setTerm(err)
		}
		return err
	}
	return nil
}

func (s *Stream) setTerm(err error) {
	s.mu.Lock()
	if s.term == nil {
		s.term = err
	}
	s.mu.Unlock()
}

// Close cancels the stream at the service unless it already ended, and
// releases it: responses still coming are dropped, and the matchtag is
// freed when the final one arrives. It returns an error only if the cancel
// request could not be written.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.c.abandon(s.cl)
	return s.cancel()
}

// cancel sends the cancel request once, if the stream has not ended and
// the Conn is open.
func (s *Stream) cancel() error {
	s.mu.Lock()
	if s.cancelSent {
		s.mu.Unlock()
		return nil
	}
	s.cancelSent = true
	s.mu.Unlock()
	s.c.mu.Lock()
	skip := s.cl.final || s.cl.cancelSent || s.c.err != nil
	s.c.mu.Unlock()
	if skip {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	err := s.c.Send(ctx, s.cancelTopic, map[string]uint32{"matchtag": s.tag})
	if err != nil && (errors.Is(err, ErrClosed) || errors.Is(err, ErrDisconnected)) {
		return nil // the broker drops a gone client's streams itself
	}
	return err
}
