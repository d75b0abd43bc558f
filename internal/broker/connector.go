package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// ErrUnreachable is returned (wrapped with the last connection error)
// by Connector.Get while there is no usable broker connection.
var ErrUnreachable = errors.New("flux broker unreachable")

// ConnectorOptions configure a Connector.
type ConnectorOptions struct {
	// URI of the broker; empty means $FLUX_URI, then the local default
	// (see flux.Dial).
	URI string
	// Workers is the executor's number of workers (connections).
	Workers int
	// Backoff paces reconnection attempts. The zero value means 200ms
	// doubling up to 30s, with jitter.
	Backoff wait.Backoff
	// DialTimeout bounds one connection attempt. Zero means 10s.
	DialTimeout time.Duration
	// CheckInterval is how often the executor's health is polled (its
	// control connection is also watched directly). Zero means 500ms.
	CheckInterval time.Duration
	// ShutdownTimeout bounds how long stopping waits for in-flight
	// submissions before closing the connections. Zero means 5s. Jobs keep
	// running in Flux; the next manager re-attaches to them.
	ShutdownTimeout time.Duration
	// Logger receives connection logs (and the executor's).
	Logger logr.Logger
	// DialOptions are passed to flux.Dial for the control connection and
	// every executor worker (a transport: SSH settings, a pod-exec dialer).
	DialOptions []flux.Option
	// EventSource is how the executor follows jobs (default: eventlog).
	EventSource fluxbridge.EventSource
	// Instance names the Flux instance in metrics (label instance) and
	// logs. Empty means "default".
	Instance string
	// MaxMessageSize is the largest message accepted from the broker
	// (flux.WithMaxMessageSize); 0 means flux.DefaultMaxMessageSize.
	MaxMessageSize int
	// Keepalive and KeepaliveTimeout check every connection with a round
	// trip (flux.WithKeepalive): a broker that stops answering is
	// disconnected and dialled again. Zero means
	// flux.DefaultKeepaliveInterval and flux.DefaultKeepaliveTimeout; a
	// negative Keepalive turns the check off.
	Keepalive, KeepaliveTimeout time.Duration
	// MungeSocket, when set, makes every submission signed with munge as
	// the connection's user (job.MungeSigner): a credential from the
	// munged at this socket on the broker's host, reached through the
	// connection itself (for ssh://, a forwarded unix socket, so munged
	// vouches for the SSH user). Connecting asks munged once for the uid
	// it vouches for; a failure there fails the connection attempt.
	MungeSocket string
	// Curve, when set (instead of MungeSocket), signs every submission
	// with flux-security's curve mechanism with this certificate, as the
	// uid it was issued for.
	Curve *sign.Cert
}

// dialOptions are the options of every connection: the transport's, then
// the bounds a broker's answers must keep.
func (o ConnectorOptions) dialOptions() []flux.Option {
	opts := append([]flux.Option{}, o.DialOptions...)
	opts = append(opts, flux.WithMaxMessageSize(o.MaxMessageSize))
	if o.Keepalive >= 0 {
		interval := o.Keepalive
		if interval == 0 {
			interval = flux.DefaultKeepaliveInterval
		}
		opts = append(opts, flux.WithKeepalive(interval, o.KeepaliveTimeout))
	}
	return opts
}

// Connector owns the shared fluxbridge.Executor and a control
// connection for the job RPCs the executor does not offer (cancel,
// urgency, list). It is a manager.Runnable: Start connects with backoff,
// watches the connection, and reconnects (a new executor) when the broker
// goes away; it shuts the executor down when the manager stops. It also
// serves as the readiness check (healthz.Checker) via Ready.
type Connector struct {
	opts ConnectorOptions
	log  logr.Logger

	mu          sync.RWMutex
	exec        *fluxbridge.Executor
	ctl         *flux.Conn
	lastErr     error
	instanceID  string // InstanceIdentity of the connected instance
	signerUID   int64  // the uid munged vouches for (MungeSocket) or Curve's, else -1
	generation  uint64 // counts successful connects
	onReconnect []func()
	// onStateChange, if set (by the Registry, through
	// setStateHook), runs after every connect and disconnect; it must not
	// block.
	onStateChange func()
	// waiting reads the instance's queues and the scheduler's annotations
	// while FluxJobs wait on it (waiting.go).
	waiting waitingWatch
}

// NewConnector returns a connector; nothing is dialled until Start.
func NewConnector(opts ConnectorOptions) *Connector {
	if opts.Backoff.Duration == 0 {
		opts.Backoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 30 * time.Second}
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 500 * time.Millisecond
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	if opts.Instance == "" {
		opts.Instance = "default"
	}
	return &Connector{opts: opts, log: opts.Logger.WithName("flux"), signerUID: -1}
}

// errNotConnectedYet is what Get reports before the first connection
// attempt has finished.
var errNotConnectedYet = errors.New("not connected yet")

// OnConnect registers fn to run (on the connector's goroutine) after each
// successful connection, the first included. Register before Start.
func (c *Connector) OnConnect(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onReconnect = append(c.onReconnect, fn)
}

// setStateHook sets the function run after every connect and disconnect.
func (c *Connector) setStateHook(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onStateChange = fn
}

// setWaitingHook sets the function run after every read of the
// instance's Waiting; it must not block.
func (c *Connector) setWaitingHook(fn func(old, new Waiting)) {
	c.waiting.mu.Lock()
	defer c.waiting.mu.Unlock()
	c.waiting.onChange = fn
}

// Get returns the current executor and control connection, or an error
// wrapping ErrUnreachable and the last connection error.
func (c *Connector) Get() (*fluxbridge.Executor, *flux.Conn, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.exec == nil {
		cause := c.lastErr
		if cause == nil {
			cause = errNotConnectedYet
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, cause)
	}
	return c.exec, c.ctl, nil
}

// SignerUID returns the uid munged vouched for when the current
// connection was made (ConnectorOptions.MungeSocket); -1 without one or
// while not connected.
func (c *Connector) SignerUID() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.signerUID
}

// InstanceID returns the identity of the Flux instance of the current
// connection (InstanceIdentity; "" when unknown or not connected).
func (c *Connector) InstanceID() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.instanceID
}

// State reports whether the executor is connected and, if a connection
// attempt failed or the connection was lost, why it is not. Before the
// first attempt has finished it reports (false, ""): not known to be
// unreachable, so FluxJobs are not flagged during a normal start.
func (c *Connector) State() (connected bool, unreachable string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.exec != nil {
		return true, ""
	}
	if c.lastErr == nil {
		return false, ""
	}
	return false, c.lastErr.Error()
}

// Reason is why the connection is not there, as a condition reason: the
// broker broke a rule of the protocol (flux.ProtocolReason: MessageTooLarge,
// MalformedMessage, BrokerUnresponsive), else "" (not connected for an
// ordinary reason, or connected).
func (c *Connector) Reason() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.exec != nil || c.lastErr == nil {
		return ""
	}
	return flux.ProtocolReason(c.lastErr)
}

// Ready is a healthz.Checker: nil while the executor is connected.
func (c *Connector) Ready(_ *http.Request) error {
	_, _, err := c.Get()
	return err
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica connects, so that readiness reflects the broker on all of them
// and a new leader can work at once.
func (c *Connector) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable. It returns nil when ctx ends, after
// the executor is shut down.
func (c *Connector) Start(ctx context.Context) error {
	backoff := c.opts.Backoff
	for {
		exec, ctl, uid, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.setDisconnected(err)
			d := backoff.Step()
			c.log.Info("cannot connect to the Flux broker; retrying", "uri", c.opts.URI, "error", err.Error(), "retryIn", d)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
			continue
		}
		backoff = c.opts.Backoff
		c.setConnected(exec, ctl, c.identify(ctx, ctl), uid)
		lost := c.watch(ctx, exec, ctl)
		if lost == nil { // ctx ended: graceful shutdown
			c.shutdown(exec, ctl)
			return nil
		}
		c.log.Error(lost, "lost the Flux broker connection; reconnecting")
		c.setDisconnected(lost)
		// The executor is broken: its futures have failed with the
		// connection error. Close releases its goroutines.
		_ = exec.Close()
		_ = ctl.Close()
	}
}

func (c *Connector) connect(ctx context.Context) (*fluxbridge.Executor, *flux.Conn, int64, error) {
	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	dial := c.opts.dialOptions()
	ctl, err := flux.Dial(dctx, c.opts.URI, dial...)
	if err != nil {
		return nil, nil, -1, fmt.Errorf("connecting to the Flux broker: %w", err)
	}
	uid := int64(-1)
	var newSigner func(*flux.Conn) sign.Signer
	if cert := c.opts.Curve; cert != nil {
		u, _ := cert.UserID()
		uid = u
		s := &sign.Curve{Cert: cert, UserID: uint32(u)}
		newSigner = func(*flux.Conn) sign.Signer { return s }
	} else if sock := c.opts.MungeSocket; sock != "" {
		u, err := job.MungeSigner(ctl, sock).UID(dctx)
		if err != nil {
			_ = ctl.Close()
			return nil, nil, -1, fmt.Errorf("asking munged (%s on the broker's host, through this connection) who this account is: %w", sock, err)
		}
		uid = int64(u)
		newSigner = func(w *flux.Conn) sign.Signer { return job.MungeSigner(w, sock) }
	}
	exec, err := fluxbridge.NewExecutor(dctx, fluxbridge.ExecutorOptions{
		Workers: c.opts.Workers, URI: c.opts.URI, Logger: c.opts.Logger, NamePrefix: "fluxjob-executor",
		DialOptions: dial, EventSource: c.opts.EventSource, NewSigner: newSigner,
	})
	if err != nil {
		_ = ctl.Close()
		return nil, nil, -1, fmt.Errorf("starting the executor: %w", err)
	}
	return exec, ctl, uid, nil
}

// watch blocks until ctx ends (it returns nil) or the connection breaks
// (it returns the cause).
func (c *Connector) watch(ctx context.Context, exec *fluxbridge.Executor, ctl *flux.Conn) error {
	tick := time.NewTicker(c.opts.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ctl.Done():
			if err := ctl.Err(); err != nil {
				return err
			}
			return flux.ErrDisconnected
		case <-tick.C:
			if err := exec.Err(); err != nil {
				return err
			}
			c.waiting.tick(ctx, time.Now(), ctl)
		}
	}
}

func (c *Connector) shutdown(exec *fluxbridge.Executor, ctl *flux.Conn) {
	c.setDisconnected(errors.New("shutting down"))
	sctx, cancel := context.WithTimeout(context.Background(), c.opts.ShutdownTimeout)
	defer cancel()
	if err := exec.ShutdownContext(sctx, false); err != nil {
		c.log.Info("executor did not finish in time; closing its connections (jobs keep running in Flux)", "error", err.Error())
	}
	_ = exec.Close()
	_ = ctl.Close()
}

// identify reads the instance's identity (see InstanceIdentity); a
// failure is logged and leaves it unknown.
func (c *Connector) identify(ctx context.Context, ctl *flux.Conn) string {
	ictx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	id, err := InstanceIdentity(ictx, ctl)
	if err != nil {
		c.log.Error(err, "cannot read the Flux instance identity; job IDs will be checked by job name only")
	}
	return id
}

func (c *Connector) setConnected(exec *fluxbridge.Executor, ctl *flux.Conn, instanceID string, signerUID int64) {
	c.mu.Lock()
	c.exec, c.ctl, c.lastErr, c.instanceID, c.signerUID = exec, ctl, nil, instanceID, signerUID
	c.generation++
	fns := append([]func(){}, c.onReconnect...)
	changed := c.onStateChange
	c.mu.Unlock()
	executorConnected.WithLabelValues(c.opts.Instance).Set(1)
	c.log.Info("connected to the Flux broker", "uri", ctl.URI(), "workers", c.opts.Workers, "instanceID", instanceID)
	for _, fn := range fns {
		fn()
	}
	if changed != nil {
		changed()
	}
}

// setDisconnected records err as why the connector is not connected; the
// relay's standard error, if err carries one, is kept out of it (it is in
// the log line of the caller), since State and Get feed the status of
// FluxEndpoints and FluxJobs.
func (c *Connector) setDisconnected(err error) {
	err = withoutRelayStderr(err)
	c.mu.Lock()
	c.exec, c.ctl, c.lastErr, c.instanceID, c.signerUID = nil, nil, err, "", -1
	changed := c.onStateChange
	c.mu.Unlock()
	executorConnected.WithLabelValues(c.opts.Instance).Set(0)
	if changed != nil {
		changed()
	}
}

// Logger is the logger the connector was configured with.
func (c *Connector) Logger() logr.Logger { return c.opts.Logger }
