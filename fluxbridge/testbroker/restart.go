package testbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// RestartKind says what kind of broker restart RestartAs simulates. What
// each keeps follows flux-core v0.88.0:
//
//   - A restart on the same statedir replays every job from the KVS
//     (src/modules/job-manager/restart.c restart_from_kvs): inactive jobs
//     stay inactive, pending jobs stay pending, and a job that was waiting
//     for resources (SCHED) gets a "flux-restart" event and goes back
//     through PRIORITY (a new "priority" event) before it is scheduled
//     again. Job IDs continue after the highest one seen: job-ingest
//     starts its FLUID generator at the timestamp of job-manager's
//     max_jobid plus one (src/modules/job-ingest/job-ingest.c).
//   - A job that was running when the broker died is handed back to
//     job-exec to re-attach, which fails (see ReattachFailedNote; bulk-exec
//     has no reattach method either), so such a job ends with an exec
//     exception of severity 0, without a finish event: its shells died with
//     the broker's container.
//   - A clean stop (SIGTERM) first runs the cleanup phase of rc1
//     (etc/modprobe/rc1.py: queue stop, then `flux cancel --user=all
//     --states RUN`, then queue idle), so running jobs end cancelled before
//     the broker exits, and pending ones survive.
//   - A fresh instance (no statedir, or a new one) starts with no jobs and
//     its FLUID generator at timestamp 1 ms: its job IDs are the same
//     small numbers every fresh instance hands out, so they collide with
//     the IDs of the instance it replaces.
type RestartKind int

const (
	// RestartCrash is a broker killed (SIGKILL, OOM) and started again on
	// the same statedir: running jobs end with a fatal exec exception,
	// the rest survive.
	RestartCrash RestartKind = iota
	// RestartClean is a broker stopped (SIGTERM) and started again on the
	// same statedir: running jobs were cancelled before it stopped.
	RestartClean
	// RestartFresh is a new instance in place of the old one: no jobs, no
	// KVS, and a new FLUID generator whose IDs collide with the old ones.
	RestartFresh
)

// String names the kind.
func (k RestartKind) String() string {
	switch k {
	case RestartCrash:
		return "crash"
	case RestartClean:
		return "clean"
	case RestartFresh:
		return "fresh"
	}
	return fmt.Sprintf("RestartKind(%d)", int(k))
}

// ReattachFailedNote is the note of the exec exception a job running at a
// broker crash gets when the broker comes back on the same statedir: the
// job's guest KVS namespace was never grafted back (that happens at a
// clean stop), so job-exec cannot re-create it to re-attach
// (src/modules/job-exec/job-exec.c get_rootref_cb, jobinfo_start_continue).
// Checked with a real flux-core 0.88.0 broker killed with SIGKILL and
// started again on its statedir (kvs checkpoint-period 1s): the running
// job's eventlog then ends "exception type=exec severity=0 note=\"failed to
// create guest ns: No such file or directory\"", release, free, clean, and
// a held job gets flux-restart and priority.
const ReattachFailedNote = "failed to create guest ns: No such file or directory"

// Restart simulates a broker restart on the same socket path: every
// connection is dropped and the socket is re-created. keepJobs true is
// RestartAs(RestartCrash), false RestartAs(RestartFresh).
func (s *Server) Restart(keepJobs bool) error {
	if keepJobs {
		return s.RestartAs(RestartCrash)
	}
	return s.RestartAs(RestartFresh)
}

// RestartAs simulates a broker restart of the given kind (see RestartKind)
// on the same socket path: every connection is dropped, every job's
// lifecycle stops where it is, then the kept jobs are replayed as
// flux-core's job-manager does and the socket is re-created.
func (s *Server) RestartAs(kind RestartKind) error {
	s.mu.Lock()
	if s.state != srvRunning {
		err := s.notRunningLocked()
		s.mu.Unlock()
		return err
	}
	if kind == RestartClean {
		// rc1's cleanup phase, while the old broker still runs.
		s.cancelRunningLocked()
	}
	s.stopConnsLocked()
	// Cancelled under s.mu: a job goroutine that takes s.mu after this
	// sees it (lockLive) and posts nothing more.
	s.jobCancel()
	s.jobCtx, s.jobCancel = context.WithCancel(context.Background())
	s.mu.Unlock()
	// Wait for the old connections' goroutines and every job goroutine:
	// the broker process is gone.
	s.connWG.Wait()
	s.jobWG.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != srvRunning {
		return s.notRunningLocked()
	}
	s.coreWaiters = nil
	s.purgedUsers = nil // job-info's memory goes with the broker process
	if kind == RestartFresh {
		s.jobs = make(map[job.ID]*jobRecord)
		s.order = nil
		s.zombies = nil
		s.waiting = make(map[job.ID][]*watch)
		s.coreUsed = make([]bool, s.opts.cores())
		s.kvs = nil
		s.maxJobID = 0
		s.ids.init(s.opts.now(), 1)
	} else {
		s.replayLocked()
	}
	s.log.V(1).Info("restarted", "kind", kind.String(), "jobs", len(s.order))
	return s.listenLocked()
}

// cancelRunningLocked is `flux cancel --user=all --states RUN` and the
// wait for the queue to go idle: every running job gets a cancel
// exception, its shells die of SIGTERM, and it is cleaned up.
func (s *Server) cancelRunningLocked() {
	for _, j := range s.order {
		if j.state != stateRun {
			continue
		}
		s.postLocked(j, "exception", obj{{"type", "cancel"}, {"severity", 0}, {"note", ""}, {"userid", int64(s.owner)}})
		if j.waitStatus < 0 {
			s.finishLocked(j, (128+15)<<8)
		}
		s.cleanupNowLocked(j)
	}
}

// replayLocked is job-manager's restart on the same statedir: job-list
// lists every job again at once, the ID generator continues after the
// highest job ID, and each active job goes on as restart.c decides.
func (s *Server) replayLocked() {
	var maxID job.ID
	for _, j := range s.order {
		maxID = max(maxID, j.id)
		j.listedAt = time.Time{} // job-list reloads from the KVS
	}
	s.ids.init(s.opts.now(), max(uint64(maxID)>>24, s.ids.ts)+1)
	for _, j := range s.order {
		switch {
		case j.state == stateInactive:
		case j.state == stateRun:
			// The shells died with the broker; job-exec cannot re-attach.
			s.postLocked(j, "exception", obj{{"type", "exec"}, {"severity", 0}, {"note", ReattachFailedNote}, {"userid", int64(s.owner)}})
			s.cleanupNowLocked(j)
		case j.state == stateCleanup:
			// The end was posted; what the old broker did not finish
			// (release, free, clean) happens now.
			s.cleanupNowLocked(j)
		default:
			if j.state == stateSched {
				s.postLocked(j, "flux-restart", nil)
				j.priority = priorityFor(j.urgency)
				s.postLocked(j, "priority", obj{{"priority", j.priority}})
			}
			s.jobWG.Add(1)
			go s.runJob(s.jobCtx, j)
		}
	}
}

// cleanupNowLocked ends a job whose end was posted: release and free if it
// held resources, then clean.
func (s *Server) cleanupNowLocked(j *jobRecord) {
	if j.hasResources && j.cores != nil {
		s.postLocked(j, "release", obj{{"ranks", "all"}, {"final", true}})
		s.freeLocked(j)
		s.postLocked(j, "free", nil)
	}
	s.postLocked(j, "clean", nil)
}

// idGenerator makes FLUIDs as flux-core's job-ingest does
// (src/common/libutil/fluid.c): 40 bits of milliseconds, 14 bits of
// generator id (0: rank 0), 10 bits of sequence. The milliseconds are not
// wall-clock time: they start at a given timestamp (1 for a fresh
// instance, max_jobid's plus one after a restart) and advance with the
// clock (Options.Now here, a monotonic clock in flux-core). Where
// flux-core waits for the next millisecond when 1,023 IDs were made in
// one, this generator moves to the next millisecond itself, so that a
// frozen Options.Now still gives distinct IDs.
type idGenerator struct {
	now  func() time.Time
	zero time.Time // clock at init
	base uint64    // timestamp at zero
	ts   uint64    // timestamp of the last ID
	seq  uint64    // sequence number of the next ID within ts
}

// init is fluid_init(gen, 0, ts).
func (g *idGenerator) init(now time.Time, ts uint64) {
	g.zero, g.base, g.ts, g.seq = now, ts, ts, 0
}

func (g *idGenerator) next() job.ID {
	ms := g.base + uint64(max(g.now().Sub(g.zero).Milliseconds(), 0))
	if ms > g.ts {
		g.ts, g.seq = ms, 0
	}
	if g.seq >= 1<<10-1 {
		g.ts++
		g.seq = 0
	}
	id := job.ID(g.ts<<24 | g.seq)
	g.seq++
	return id
}

// RequestCount returns how many requests with topic the server has
// received since it was created (across restarts), e.g.
// "job-list.list": what a client cost the broker.
func (s *Server) RequestCount(topic string) int {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	return s.requests[topic]
}

func (s *Server) countRequest(topic string) {
	s.countMu.Lock()
	if s.requests == nil {
		s.requests = make(map[string]int)
	}
	s.requests[topic]++
	s.countMu.Unlock()
}

// handleGetinfo serves job-manager.getinfo -> {"max_jobid"}: the highest
// job ID job-manager has seen, kept across restarts on the same state
// (src/modules/job-manager/job-manager.c getinfo_handle_request; restart.c
// restores it from the checkpoint, and purge keeps it when it purges that
// job). In private mode a guest gets EPERM without a message.
func (s *Server) handleGetinfo(c *conn, req *wire.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restrictedLocked(req) {
		// private mode: a guest may not learn of others' jobs
		s.respondError(c, req, &rpcError{errno: syscall.EPERM})
		return
	}
	s.respond(c, req, obj{{"max_jobid", s.maxJobID}})
}

// kvsValue is a KVS value as a treeobj (RFC 11): {"data": base64,
// "type": "val", "ver": 1}.
type kvsValue = json.RawMessage
