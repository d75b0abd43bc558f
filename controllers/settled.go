package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// settledTTL is how long a final status write is remembered. The informer
// cache shows the write within a watch round trip; a minute covers a slow
// API server and keeps a forged status from being ignored for long.
const settledTTL = time.Minute

// settledSet remembers, for settledTTL, the FluxJobs whose final status
// this controller has just written, with the resourceVersion that write
// returned. A reconcile that reads such a FluxJob from the cache still
// unfinished and at another resourceVersion is reading the object from
// before that write: the Tracker has already forgotten the job, and
// treating the read as real would verify or look the job up in Flux again
// (a job-list request per finished FluxJob) and attach a new future to a
// job that is over. The write's own watch event brings the finished
// object. The zero value is ready to use; safe for concurrent use.
type settledSet struct {
	mu        sync.Mutex
	m         map[types.UID]settledEntry
	lastSweep time.Time
}

type settledEntry struct {
	rv string
	at time.Time
}

// add records that uid's final status was written at resourceVersion rv.
// Expired entries are swept at most once per settledTTL (not on every add:
// this runs once per finished FluxJob), so the set stays bounded by what
// was finished in the last two TTLs.
func (s *settledSet) add(uid types.UID, rv string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]settledEntry{}
	}
	if now.Sub(s.lastSweep) > settledTTL {
		for k, e := range s.m {
			if now.Sub(e.at) > settledTTL {
				delete(s.m, k)
			}
		}
		s.lastSweep = now
	}
	s.m[uid] = settledEntry{rv: rv, at: now}
}

// remove forgets uid (its finished object has been seen, or it is gone).
func (s *settledSet) remove(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

// stale reports whether obj is a cached read from before this controller's
// final status write of it.
func (s *settledSet) stale(obj *fluxjobv1.FluxJob, now time.Time) bool {
	if obj.Status.Phase.IsTerminal() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[obj.UID]
	if !ok {
		return false
	}
	if now.Sub(e.at) > settledTTL {
		delete(s.m, obj.UID)
		return false
	}
	return obj.ResourceVersion != e.rv
}
