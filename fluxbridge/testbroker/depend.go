package testbroker

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"syscall"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Job dependencies, as flux-core 0.88's job-manager does them:
//
//   - jobtap.c jobtap_check_dependencies calls job.dependency.<scheme> for
//     each entry of attributes.system.dependencies while the job is NEW
//     (after the submit event, before validate); a scheme no plugin handles
//     refuses the submission: "dependency scheme \"S\" not supported".
//   - plugins/dependency-after.c handles after (deprecated: a severity-3
//     "dependency" exception says so), afterstart, afterany, afterok,
//     afternotok and afterexcept, whose value is a job ID in any encoding.
//     It posts dependency-add {"description": "<type>=<value>"} (types
//     after-start, after-finish, after-success, after-failure,
//     after-except), refuses the submission for a bad ID, an unknown job,
//     another user's job, or a target that already ended the wrong way, and
//     posts dependency-remove when the target meets the condition. A target
//     that ends without meeting it raises a severity-0 "dependency"
//     exception on the dependant: "dependency <description> can never be
//     satisfied", or "... job never started" for a target that never got
//     resources (only afterany is satisfied by such a target).
//   - plugins/begin-time.c handles begin-time, whose value is a timestamp
//     in a string ("Invalid begin-time=V" otherwise), with description
//     "begin-time=%.3f", removed once the time has come.
//   - event.c posts depend once the job has no outstanding dependency.

// after* dependency types (dependency-after.c enum after_type).
const (
	afterStart = 1 << iota
	afterAny
	afterSuccess
	afterFailure
	afterExcept
)

// afterTypes maps schemes to types and the description prefix.
var afterTypes = map[string]struct {
	typ  int
	desc string
}{
	"after":       {afterStart, "after-start"},
	"afterstart":  {afterStart, "after-start"},
	"afterany":    {afterAny, "after-finish"},
	"afterok":     {afterSuccess, "after-success"},
	"afternotok":  {afterFailure, "after-failure"},
	"afterexcept": {afterExcept, "after-except"},
}

// depEntry is one dependency of a job being submitted, checked.
type depEntry struct {
	scheme string
	desc   string
	typ    int        // after* type; 0 for begin-time
	target *jobRecord // after*: the job depended on
	// satisfied: the target already met the condition (dependency-add is
	// followed at once by dependency-remove).
	satisfied bool
	beginTime float64
}

// depState is what a job has to do with dependencies: the descriptions it
// still waits for, its begin-time, and the jobs waiting on it.
type depState struct {
	pending   []string
	beginTime float64
	beginDesc string
	// waiters are after* dependencies of other jobs on this one.
	waiters []depWaiter
}

type depWaiter struct {
	job  *jobRecord
	typ  int
	desc string
}

// checkDependenciesLocked checks a new job's dependencies for submitter
// uid; an error refuses the submission (EINVAL, the plugin's message).
func (s *Server) checkDependenciesLocked(uid uint32, deps []job.Dependency) ([]depEntry, error) {
	var out []depEntry
	for _, d := range deps {
		if d.Scheme == "begin-time" {
			ts, err := strconv.ParseFloat(d.Value, 64)
			if err != nil || ts < 0 || math.IsNaN(ts) || math.IsInf(ts, 0) {
				return nil, errorf(syscall.EINVAL, "Invalid begin-time=%s", d.Value)
			}
			out = append(out, depEntry{scheme: d.Scheme, desc: fmt.Sprintf("begin-time=%.3f", ts), beginTime: ts})
			continue
		}
		at, ok := afterTypes[d.Scheme]
		if !ok {
			return nil, errorf(syscall.EINVAL, "dependency scheme \"%s\" not supported", d.Scheme)
		}
		id, err := job.ParseID(d.Value)
		if err != nil || id == 0 {
			return nil, errorf(syscall.EINVAL, "dependency: %s: \"%s\" is not a valid jobid", d.Scheme, d.Value)
		}
		t, ok := s.jobs[id]
		if !ok {
			return nil, errorf(syscall.EINVAL, "dependency: %s: id %s: job not found", d.Scheme, d.Value)
		}
		if t.userid != uid {
			return nil, errorf(syscall.EINVAL, "%s: Permission denied for job %s", d.Scheme, d.Value)
		}
		e := depEntry{scheme: d.Scheme, desc: at.desc + "=" + d.Value, typ: at.typ, target: t}
		switch {
		case t.state == stateInactive:
			// dependency_handle_inactive
			switch {
			case at.typ != afterAny && !t.hasEvent("alloc"), at.typ == afterStart && !t.hasEvent("start"):
				return nil, errorf(syscall.EINVAL, "dependency: after: %s never started", d.Value)
			case at.typ == afterSuccess && t.result != resultCompleted:
				return nil, errorf(syscall.EINVAL, "dependency: afterok: job %s failed or was canceled", d.Value)
			case at.typ == afterFailure && t.result == resultCompleted:
				return nil, errorf(syscall.EINVAL, "dependency: afternotok: job %s succeeded", d.Value)
			case at.typ == afterExcept && (t.endEvent == nil || t.endEvent.name != "exception"):
				return nil, errorf(syscall.EINVAL, "dependency: afterexcept: job %s: no exception", d.Value)
			}
			e.satisfied = true
		case at.typ == afterStart && t.hasEvent("start"):
			e.satisfied = true
		}
		out = append(out, e)
	}
	return out, nil
}

// addDependenciesLocked posts a new job's dependency events (after its
// submit event) and registers what is still outstanding.
func (s *Server) addDependenciesLocked(j *jobRecord, deps []depEntry) {
	if len(deps) == 0 {
		return
	}
	j.dep = &depState{}
	for _, d := range deps {
		if d.scheme == "after" {
			s.postLocked(j, "exception", obj{
				{"type", "dependency"}, {"severity", 3},
				{"note", "dependency scheme 'after' is deprecated, use 'afterstart'"},
				{"userid", int64(s.owner)},
			})
		}
		s.postLocked(j, "dependency-add", obj{{"description", d.desc}})
		switch {
		case d.satisfied:
			s.postLocked(j, "dependency-remove", obj{{"description", d.desc}})
		case d.target != nil:
			j.dep.pending = append(j.dep.pending, d.desc)
			if d.target.dep == nil {
				d.target.dep = &depState{}
			}
			d.target.dep.waiters = append(d.target.dep.waiters, depWaiter{job: j, typ: d.typ, desc: d.desc})
		default:
			j.dep.pending = append(j.dep.pending, d.desc)
			j.dep.beginTime, j.dep.beginDesc = d.beginTime, d.desc
		}
	}
}

// hasEvent reports whether j's eventlog has an event named name.
func (j *jobRecord) hasEvent(name string) bool {
	for i := range j.events {
		if j.events[i].name == name {
			return true
		}
	}
	return false
}

// removeDependencyLocked posts dependency-remove for desc on j, if j
// still waits for it, and wakes j.
func (s *Server) removeDependencyLocked(j *jobRecord, desc string) {
	if j.dep == nil || j.state&(stateNewJob|stateDepend) == 0 {
		return
	}
	for i, p := range j.dep.pending {
		if p == desc {
			j.dep.pending = append(j.dep.pending[:i], j.dep.pending[i+1:]...)
			s.postLocked(j, "dependency-remove", obj{{"description", desc}})
			j.signal()
			return
		}
	}
}

// dependencyEventLocked runs after j posted e: a start releases the jobs
// waiting for j to start; a clean (j inactive) releases the ones whose
// condition j met and raises a "dependency" exception on the others
// (dependency-after.c start_cb, release_dependent_jobs).
func (s *Server) dependencyEventLocked(j *jobRecord, e *event) {
	if j.dep == nil || len(j.dep.waiters) == 0 {
		return
	}
	switch e.name {
	case "start":
		kept := j.dep.waiters[:0]
		for _, w := range j.dep.waiters {
			if w.typ == afterStart {
				s.removeDependencyLocked(w.job, w.desc)
			} else {
				kept = append(kept, w)
			}
		}
		j.dep.waiters = kept
	case "clean":
		waiters := j.dep.waiters
		j.dep.waiters = nil
		release, note := 0, "can never be satisfied"
		switch {
		case !j.hasEvent("alloc"):
			release, note = afterAny, "job never started"
		case j.result != resultCompleted:
			release = afterAny | afterFailure
			if j.endEvent != nil && j.endEvent.name == "exception" {
				release |= afterExcept
			}
		default:
			release = afterAny | afterSuccess
		}
		for _, w := range waiters {
			if w.typ&release != 0 {
				s.removeDependencyLocked(w.job, w.desc)
				continue
			}
			if w.job.state&(stateNewJob|stateDepend) == 0 {
				continue
			}
			s.postLocked(w.job, "exception", obj{
				{"type", "dependency"}, {"severity", 0},
				{"note", fmt.Sprintf("dependency %s %s", w.desc, note)},
				{"userid", int64(s.owner)},
			})
		}
	}
}

// waitDependencies blocks j's lifecycle in DEPEND until it has no
// outstanding dependency, removing its begin-time dependency when the time
// has come. It returns pauseInterrupted on a fatal exception and pauseDone
// when ctx ends.
func (s *Server) waitDependencies(ctx context.Context, j *jobRecord) pauseResult {
	for {
		s.mu.Lock()
		if j.fatal {
			s.mu.Unlock()
			return pauseInterrupted
		}
		if j.dep == nil || len(j.dep.pending) == 0 {
			s.mu.Unlock()
			return pauseElapsed
		}
		var wait time.Duration = -1
		if j.dep.beginDesc != "" {
			now := float64(s.opts.now().UnixNano()) / 1e9
			if now >= j.dep.beginTime {
				desc := j.dep.beginDesc
				j.dep.beginDesc = ""
				s.removeDependencyLocked(j, desc)
				s.mu.Unlock()
				continue
			}
			wait = time.Duration((j.dep.beginTime - now) * float64(time.Second))
		}
		s.mu.Unlock()
		if wait < 0 {
			if !waitWake(ctx, j) {
				return pauseDone
			}
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return pauseDone
		case <-j.wake:
			t.Stop()
		case <-t.C:
		}
	}
}
