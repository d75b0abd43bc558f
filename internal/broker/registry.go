package broker

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// Config is what the registry needs to run one Flux instance's
// executor: where to dial, how, and which namespaces it admits.
type Config struct {
	// URI names the broker (and is dialled by its scheme unless
	// DialOptions supply a dialer).
	URI string
	// DialOptions are passed to flux.Dial for the control connection and
	// every executor worker (an SSH config, a pod-exec dialer).
	DialOptions []flux.Option
	// Workers is the executor's number of workers.
	Workers int
	// EventSource is how the executor follows jobs.
	EventSource fluxbridge.EventSource
	// MaxMessageSize, Keepalive and KeepaliveTimeout are the connector's
	// bounds on the broker's answers (ConnectorOptions).
	MaxMessageSize              int
	Keepalive, KeepaliveTimeout time.Duration
	// Key identifies the connection settings: a config whose Key differs
	// from the running one replaces the connector (a new connection);
	// an equal Key keeps it. Empty means URI.
	Key string
	// Selector selects the namespaces the instance admits; nil admits
	// none (a FluxEndpoint without spec.namespaceSelector), Everything
	// all of them.
	Selector labels.Selector
	// Default marks the instance as the default for FluxJobs without
	// spec.instance.
	Default bool
	// Invalid, if not empty, says why the connection settings cannot be
	// used: the instance exists (FluxJobs route to it and wait) but has no
	// connector.
	Invalid string
	// Accounts are the instance's accounts (accounts.go): each its own
	// connector, chosen by namespace. None: every namespace uses the
	// instance's own connector.
	Accounts []AccountConfig
	// Unmapped is what becomes of a namespace no account selects, when
	// there are accounts (default: refused).
	Unmapped fluxjobv1.UnmappedNamespacePolicy
}

func (c Config) key() string {
	if c.Key != "" {
		return c.Key
	}
	k := fmt.Sprintf("%s|%d|%d|%d|%s|%s", c.URI, c.Workers, c.EventSource, c.MaxMessageSize, c.Keepalive, c.KeepaliveTimeout)
	for _, a := range c.Accounts {
		k += "|" + a.key()
	}
	return k
}

// instanceEntry is one instance in the registry.
type instanceEntry struct {
	name string
	cfg  Config
	conn *Connector // nil while cfg.Invalid is set
	// accounts are the connectors of cfg.Accounts, in the same order.
	accounts []*Connector
	// owned entries were started by the registry and are stopped by it;
	// the implicit instance's connector belongs to the manager.
	owned  bool
	cancel context.CancelFunc
	done   chan struct{}
}

// Registry holds one Connector (an executor and a control
// connection) per Flux instance, keyed by instance name. FluxEndpoint
// objects come and go through Set and Remove (the FluxEndpoint
// reconciler); the manager's implicit instance (its --flux-uri sidecar)
// is registered with SetImplicit. It is a manager.Runnable: connectors it
// starts run until Remove, a replacing Set, or the end of Start's context.
type Registry struct {
	opts ConnectorOptions // template for the connectors it starts
	log  logr.Logger

	mu        sync.RWMutex
	ctx       context.Context // Start's; nil before Start
	entries   map[string]*instanceEntry
	implicit  string
	pending   []*instanceEntry // Set before Start
	onConnect []func(instance string)
	onChange  []func(instance string)
	onWaiting []func(instance string, old, new Waiting)
}

// NewRegistry returns an empty registry; opts (backoff, timeouts,
// logger) are the template of every connector it starts (URI and Workers
// come from each instance's config).
func NewRegistry(opts ConnectorOptions) *Registry {
	return &Registry{opts: opts, log: opts.Logger.WithName("instances"), entries: map[string]*instanceEntry{}}
}

// OnConnect registers fn to run after each successful connection of any
// instance, with the instance's name. Register before Start.
func (r *Registry) OnConnect(fn func(instance string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onConnect = append(r.onConnect, fn)
}

// OnChange registers fn to run whenever an instance connects or loses
// its connection, or is added or removed. It must not block.
func (r *Registry) OnChange(fn func(instance string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = append(r.onChange, fn)
}

// SetImplicit registers conn, whose lifecycle the caller owns (it is a
// manager runnable), as the implicit instance name: the default when no
// FluxEndpoint is marked default, admitting every namespace. A
// FluxEndpoint of the same name is refused (see Implicit).
func (r *Registry) SetImplicit(name string, conn *Connector) {
	e := &instanceEntry{name: name, conn: conn, cfg: Config{URI: conn.opts.URI, Selector: labels.Everything()}}
	r.mu.Lock()
	r.entries[name], r.implicit = e, name
	r.mu.Unlock()
	r.hook(name, conn)
}

// Implicit returns the implicit instance's name ("" if there is none).
func (r *Registry) Implicit() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.implicit
}

// hook makes conn report its connects and state changes as instance name.
func (r *Registry) hook(name string, conn *Connector) {
	conn.OnConnect(func() {
		r.mu.RLock()
		fns := slices.Clone(r.onConnect)
		r.mu.RUnlock()
		for _, fn := range fns {
			fn(name)
		}
	})
	conn.setStateHook(func() { r.changed(name) })
	conn.setWaitingHook(func(old, new Waiting) { r.waitingChanged(name, old, new) })
}

func (r *Registry) changed(name string) {
	r.mu.RLock()
	fns := slices.Clone(r.onChange)
	r.mu.RUnlock()
	for _, fn := range fns {
		fn(name)
	}
}

// Set registers or updates the instance name. A config with new
// connection settings (Key) replaces the connector; otherwise only the
// selector and default mark change. It returns whether a new connector
// was started.
func (r *Registry) Set(name string, cfg Config) bool {
	r.mu.Lock()
	old := r.entries[name]
	if old != nil && old.cfg.key() == cfg.key() && old.cfg.Invalid == cfg.Invalid && (old.conn != nil) == (cfg.Invalid == "") {
		same := old.cfg.Default == cfg.Default && selectorString(old.cfg.Selector) == selectorString(cfg.Selector) &&
			sameMapping(old.cfg, cfg)
		old.cfg.Selector, old.cfg.Default = cfg.Selector, cfg.Default
		old.cfg.Accounts, old.cfg.Unmapped = cfg.Accounts, cfg.Unmapped
		r.mu.Unlock()
		if !same {
			r.changed(name)
		}
		return false
	}
	e := &instanceEntry{name: name, cfg: cfg, owned: true}
	if cfg.Invalid == "" {
		opts := r.opts
		opts.URI, opts.Workers, opts.DialOptions, opts.EventSource = cfg.URI, max(cfg.Workers, 1), cfg.DialOptions, cfg.EventSource
		if cfg.MaxMessageSize != 0 {
			opts.MaxMessageSize = cfg.MaxMessageSize
		}
		if cfg.Keepalive != 0 {
			opts.Keepalive, opts.KeepaliveTimeout = cfg.Keepalive, cfg.KeepaliveTimeout
		}
		opts.Logger = r.opts.Logger.WithValues("instance", name)
		opts.Instance = name
		e.conn = NewConnector(opts)
		r.hook(name, e.conn)
		for _, a := range cfg.Accounts {
			ac := NewConnector(a.connectorOptions(opts, r.opts.Logger, name))
			r.hook(name, ac)
			e.accounts = append(e.accounts, ac)
		}
	}
	r.entries[name] = e
	start := r.ctx != nil
	if !start && e.conn != nil {
		r.pending = append(r.pending, e)
	}
	r.mu.Unlock()
	if old != nil {
		r.log.Info("instance settings changed; replacing its connection", "instance", name)
		old.stop()
	}
	if start && e.conn != nil {
		r.run(e)
	}
	r.changed(name)
	return e.conn != nil
}

// selectorString tells selectors apart ("<none>" for nil, which selects
// nothing, unlike the empty selector).
func selectorString(s labels.Selector) string {
	if s == nil {
		return "<none>"
	}
	return s.String()
}

// Remove unregisters the instance name and stops its connector (the
// implicit instance cannot be removed). Jobs keep running in Flux; their
// FluxJobs re-attach if the instance comes back.
func (r *Registry) Remove(name string) {
	r.mu.Lock()
	e := r.entries[name]
	if e == nil || !e.owned {
		r.mu.Unlock()
		return
	}
	delete(r.entries, name)
	r.mu.Unlock()
	r.log.Info("instance removed; closing its connection", "instance", name)
	e.stop()
	executorConnected.DeleteLabelValues(name)
	for _, a := range e.cfg.Accounts {
		executorConnected.DeleteLabelValues(accountLabel(name, a.Name))
	}
	r.changed(name)
}

// run starts e's connectors under the registry's context.
func (r *Registry) run(e *instanceEntry) {
	ctx, cancel := context.WithCancel(r.ctx)
	e.cancel, e.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range e.connectors() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Start(ctx)
		}()
	}
	go func() {
		wg.Wait()
		close(e.done)
	}()
}

// connectors are e's own connector and its accounts'.
func (e *instanceEntry) connectors() []*Connector {
	if e.conn == nil {
		return nil
	}
	return append([]*Connector{e.conn}, e.accounts...)
}

// stop stops an owned entry's connectors and waits for them.
func (e *instanceEntry) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	for _, c := range e.connectors() {
		c.setDisconnected(errInstanceRemoved)
	}
}

// errInstanceRemoved is the state of a connector whose instance is gone.
var errInstanceRemoved = fmt.Errorf("%w: the instance was removed or its settings changed", ErrUnreachable)

// Start implements manager.Runnable: it starts the connectors registered
// so far and those registered later, and stops them all when ctx ends.
func (r *Registry) Start(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	pending := r.pending
	r.pending = nil
	for _, e := range pending {
		if r.entries[e.name] == e {
			r.run(e)
		}
	}
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	var owned []*instanceEntry
	for _, e := range r.entries {
		if e.owned {
			owned = append(owned, e)
		}
	}
	r.mu.Unlock()
	for _, e := range owned {
		if e.done != nil {
			<-e.done
		}
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica connects (as Connector does).
func (r *Registry) NeedLeaderElection() bool { return false }

// Ready is a healthz.Checker: with an implicit instance, nil while it is
// connected (the sidecar deployment's readiness as before); without one,
// always nil (a remote instance being down must not take the manager out
// of service for the others).
func (r *Registry) Ready(req *http.Request) error {
	r.mu.RLock()
	e := r.entries[r.implicit]
	r.mu.RUnlock()
	if e == nil || e.conn == nil {
		return nil
	}
	return e.conn.Ready(req)
}

// Lookup returns the connector and config of the instance name; conn is
// nil if the instance's settings are invalid (cfg.Invalid says why).
func (r *Registry) Lookup(name string) (conn *Connector, cfg Config, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[name]
	if e == nil {
		return nil, Config{}, false
	}
	return e.conn, e.cfg, true
}

// Names returns the registered instances, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default returns the default instance: the one FluxEndpoint marked
// default, else the implicit instance. reason is set (and name empty)
// when there is none (ReasonNoDefaultInstance) or more than one marked
// (ReasonAmbiguousDefaultInstance); names lists the candidates then.
func (r *Registry) Default() (name string, reason string, candidates []string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var marked []string
	for n, e := range r.entries {
		if e.cfg.Default {
			marked = append(marked, n)
		}
	}
	return fluxjobv1.ChooseDefaultInstance(marked, r.implicit)
}
