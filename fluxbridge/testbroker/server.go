package testbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// Errors returned by Server methods.
var (
	// ErrNotStarted is returned by methods that need a running server.
	ErrNotStarted = errors.New("testbroker: server not started")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("testbroker: server closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("testbroker: server already started")
)

// Server is a simulated flux-core broker listening on a unix socket. Create
// it with New, then Start it; Close stops it and waits for every goroutine
// it started. Its methods are safe for concurrent use.
type Server struct {
	specs   specCache // decoded jobspecs, by J
	opts    Options
	log     logr.Logger
	dir     string
	tempDir bool
	owner   uint32

	// mu guards everything below.
	mu       sync.Mutex
	state    serverState
	ln       *net.UnixListener
	conns    map[*conn]struct{}
	jobs     map[job.ID]*jobRecord
	order    []*jobRecord // submission order
	journal  []*stream    // events-journal listeners
	waitAny  []*stream    // job-manager.wait {"id":-1} requests
	zombies  []*jobRecord // inactive waitable jobs nobody waited for yet
	waiting  map[job.ID][]*watch
	ids      idGenerator
	coreUsed []bool
	// coreWaiters are jobs whose allocation failed for want of cores
	// since the last free (guarded by mu).
	coreWaiters []*jobRecord

	connectErr    syscall.Errno
	submitErr     *rpcError
	responseDelay time.Duration
	schedPaused   bool
	// queueStates are the queues' states that differ from enabled and
	// started, by name ("" the anonymous queue; queues.go).
	queueStates map[string]queueState
	// listLag is how long after its submission a job appears in
	// job-list (see Options.ListLag).
	listLag time.Duration
	// kvs holds the primary namespace's keys that clients wrote
	// (kvs.go), kvsSeq counts its commits; purged counts purged jobs.
	kvs    map[string]json.RawMessage
	kvsSeq int
	purged int
	// purgedUsers are the purged jobs' users: job-info's memory of
	// whom it let read them (lookup answers differ for a job it knew).
	purgedUsers map[job.ID]uint32
	// maxJobID is job-manager's max_jobid (job-manager.getinfo).
	maxJobID job.ID

	// hostile is the Hostile mode (hostile.go); not under mu, as
	// messages are sent with mu held.
	hostile hostileState

	// countMu guards requests (not s.mu: counted on every message).
	countMu  sync.Mutex
	requests map[string]int

	// purgeStop ends the purge goroutine (purge.go); purgeWG counts it.
	purgeStop chan struct{}
	purgeWG   sync.WaitGroup

	// jobCtx is cancelled (under mu) to stop the job goroutines (Close,
	// RestartAs); jobWG counts them.
	jobCtx    context.Context
	jobCancel context.CancelFunc
	jobWG     sync.WaitGroup
	// connWG counts the accept loop and each connection's goroutines.
	connWG sync.WaitGroup
}

type serverState int

const (
	srvNew serverState = iota
	srvRunning
	srvClosed
)

// New returns a Server configured by opts. It does not listen yet.
func New(opts Options) *Server {
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		dir:      opts.Dir,
		owner:    opts.ownerUID(),
		conns:    make(map[*conn]struct{}),
		jobs:     make(map[job.ID]*jobRecord),
		waiting:  make(map[job.ID][]*watch),
		coreUsed: make([]bool, opts.cores()),
	}
	s.ids.now = opts.now
	s.listLag = opts.ListLag
	return s
}

// Start creates the socket and starts serving. ctx bounds nothing after
// Start returns (use Close); it is checked once, so a cancelled ctx fails
// Start.
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("testbroker: start: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case srvRunning:
		return ErrStarted
	case srvClosed:
		return ErrClosed
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "testbroker-")
		if err != nil {
			return fmt.Errorf("testbroker: socket directory: %w", err)
		}
		s.dir, s.tempDir = d, true
	}
	s.ids.init(s.opts.now(), 1)
	if s.opts.Purge != nil {
		s.startPurger(*s.opts.Purge)
	}
	if err := s.listenLocked(); err != nil {
		return err
	}
	s.jobCtx, s.jobCancel = context.WithCancel(context.Background())
	s.state = srvRunning
	s.log.V(1).Info("listening", "uri", s.uriLocked(), "owner", s.owner)
	return nil
}

func (s *Server) listenLocked() error {
	path := s.socketPathLocked()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testbroker: remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("testbroker: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	// connector-local makes its socket 0777 whatever the policy
	// (src/modules/connector-local/local.c usock_server_create): who may
	// connect is decided at accept (the accept byte), not by the file mode.
	if err := os.Chmod(path, 0o777); err != nil {
		_ = ln.Close()
		return fmt.Errorf("testbroker: chmod socket: %w", err)
	}
	s.ln = ln
	s.connWG.Add(1)
	go s.acceptLoop(ln)
	return nil
}

// Dir returns the directory holding the socket (Options.Dir, or the
// temporary directory Start created).
func (s *Server) Dir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dir
}

// SocketPath returns the path of the server's unix socket.
func (s *Server) SocketPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socketPathLocked()
}

func (s *Server) socketPathLocked() string { return filepath.Join(s.dir, SocketName) }

// URI returns the local:// URI that reaches the server (the socket path
// itself, as flux-core's local connector uses it), for flux.Dial or
// FLUX_URI.
func (s *Server) URI() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uriLocked()
}

func (s *Server) uriLocked() string { return "local://" + s.socketPathLocked() }

// Owner returns the instance owner's uid.
func (s *Server) Owner() uint32 { return s.owner }

// Close stops the server: the socket is removed, every connection is
// closed, every job stops where it is, and Close waits for all the
// goroutines the server started. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.state == srvClosed {
		s.mu.Unlock()
		return nil
	}
	wasRunning := s.state == srvRunning
	s.state = srvClosed
	if wasRunning {
		s.stopConnsLocked()
		s.jobCancel()
	}
	stop := s.purgeStop
	s.purgeStop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	s.purgeWG.Wait()
	s.connWG.Wait()
	s.jobWG.Wait()
	if s.tempDir {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("testbroker: remove socket directory: %w", err)
		}
	}
	return nil
}

// stopConnsLocked closes the listener and every connection.
func (s *Server) stopConnsLocked() {
	if s.ln != nil {
		_ = s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		s.dropConnLocked(c)
	}
}

// DropConnections closes every client connection, as a broker crash would
// look to clients, but keeps listening and keeps every job.
func (s *Server) DropConnections() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != srvRunning {
		return s.notRunningLocked()
	}
	for c := range s.conns {
		s.dropConnLocked(c)
	}
	return nil
}

func (s *Server) notRunningLocked() error {
	if s.state == srvClosed {
		return ErrClosed
	}
	return ErrNotStarted
}

// SetConnectError makes the server refuse new connections by writing errno
// as the accept byte and closing (as connector-local does for a user with
// no role). Zero accepts connections again.
func (s *Server) SetConnectError(errno syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connectErr = errno
}

// SetSubmitError makes every job-ingest.submit fail with errno and message
// (no message: no payload frame). Zero errno accepts submissions again.
func (s *Server) SetSubmitError(errno syscall.Errno, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errno == 0 {
		s.submitErr = nil
		return
	}
	s.submitErr = &rpcError{errno: errno, msg: message}
}

// SetResponseDelay delays every message the server sends by d (each
// connection's messages stay in order). Zero removes the delay.
func (s *Server) SetResponseDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.responseDelay = d
}

func (s *Server) getResponseDelay() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.responseDelay
}

// PauseScheduling stops (true) or resumes (false) resource allocation: while
// paused, every job that reaches SCHED stays there, pending, as when a
// Flux instance's queue is stopped. Running jobs are not affected.
func (s *Server) PauseScheduling(paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.schedPaused = paused
	if !paused {
		for _, j := range s.order {
			if j.state == stateSched {
				j.signal()
			}
		}
	}
}

// Eventlog returns a job's main eventlog as job-info.lookup returns it (one
// JSON event per line; parse it with job.ParseEventlog), and false for an
// unknown job.
func (s *Server) Eventlog(id job.ID) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return "", false
	}
	return j.eventlogText(), true
}

// Jobs returns the IDs of the jobs the server knows, in submission order.
func (s *Server) Jobs() []job.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]job.ID, len(s.order))
	for i, j := range s.order {
		ids[i] = j.id
	}
	return ids
}

// JobsByName returns the IDs of the jobs the server knows by job name
// (attributes.system.job.name; "" for none), each in submission order.
// Tests read it in process: a job-list of every job through the socket
// would queue behind the clients the test is loading the server with.
func (s *Server) JobsByName() map[string][]job.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]job.ID, len(s.order))
	for _, j := range s.order {
		out[j.name] = append(out[j.name], j.id)
	}
	return out
}

// ConnCount returns the number of open client connections.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// wireMaxSize returns the Reader's size bound.
func (s *Server) wireMaxSize() int {
	if s.opts.MaxMessageSize > 0 {
		return s.opts.MaxMessageSize
	}
	return wire.DefaultMaxSize
}
