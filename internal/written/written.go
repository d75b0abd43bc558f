// Package written lets a controller read its own writes: it remembers the
// FluxJobs this manager wrote until its informer cache shows them (as the
// batch/v1 Job controller keeps its expectations in a shared package).
package written

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// Reading one's own writes
//
// The reconciler reads FluxJobs from the informer cache, which shows a
// write of the controller's own a watch round trip after the API server
// answered it. A reconcile in between (a Flux callback poked it) reads
// the object from before that write. Written as it was, its
// optimistic-locked status patch would fail with a conflict (one wasted
// request, a requeue with backoff), and a read from before a final status
// write would look like an unfinished job whose tracker entry is already
// gone (a job-list lookup and a new eventlog watch per finished FluxJob).
//
// Set remembers, per FluxJob, the object as this controller's
// latest write returned it, and the resourceVersions that write (and the
// ones before it in a row) replaced. A cached read at one of those
// versions is a read from before the write: the reconciler uses the
// written object instead. A read at any other version is the cache
// having caught up, or someone else's newer write: the cache is used.
// No resourceVersions are compared for order (they are opaque).
//
// It also knows when the controller last wrote each FluxJob, which paces
// its non-final status writes (see statusBatchPeriod).

// TTL is how long a write is remembered. The cache shows a write
// within a watch round trip; past the TTL a still-stale read only costs a
// conflict and a retry.
const TTL = 30 * time.Second

// maxReplaced bounds the replaced resourceVersions kept per FluxJob.
const maxReplaced = 8

// Set is safe for concurrent use; the zero value is ready.
type Set struct {
	mu        sync.Mutex
	m         map[types.UID]*entry
	inflight  map[types.UID]string // writes sent, not answered yet: the resourceVersion the cache showed meanwhile
	lastSweep time.Time
}

// sweepEvery is how often add looks for entries to forget.
const sweepEvery = 5 * time.Second

// Begin records that a write of uid is about to be sent; add or end
// closes it.
func (s *Set) Begin(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight == nil {
		s.inflight = map[types.UID]string{}
	}
	s.inflight[uid] = ""
}

// End closes a write that failed.
func (s *Set) End(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, uid)
}

type entry struct {
	obj      *fluxjobv1.FluxJob // as the write returned it; nil once the cache showed it
	replaced []string           // resourceVersions the write replaced
	at       time.Time          // when the write was answered
}

// Add records a write of obj that replaced resourceVersion before; obj is
// the object the API server returned (it is copied). Every sweepEvery it
// forgets the entries nothing needs any more: a copy past TTL, a
// time past Pace once its copy is gone.
func (s *Set) Add(before string, obj *fluxjobv1.FluxJob, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]*entry{}
	}
	if now.Sub(s.lastSweep) > sweepEvery {
		for k, e := range s.m {
			if age := now.Sub(e.at); age > TTL || e.obj == nil && age > Pace {
				delete(s.m, k)
			}
		}
		s.lastSweep = now
	}
	seenRV, inflight := s.inflight[obj.UID]
	delete(s.inflight, obj.UID)
	if inflight && seenRV == obj.ResourceVersion {
		// The write's watch event reached the cache before its response
		// reached the writer: no copy is needed.
		s.m[obj.UID] = &entry{at: now}
		return
	}
	e := &entry{obj: obj.DeepCopy(), replaced: []string{before}, at: now}
	if old, ok := s.m[obj.UID]; ok && old.obj != nil && old.obj.ResourceVersion == before {
		// A write on top of our own previous write: a read from before
		// either is stale.
		e.replaced = append(slices.Clone(old.replaced), before)
		if len(e.replaced) > maxReplaced {
			e.replaced = e.replaced[len(e.replaced)-maxReplaced:]
		}
	}
	s.m[obj.UID] = e
}

// Latest returns the object to reconcile for a cached read obj: a copy
// of this controller's newer write of it when obj is from before that
// write, else obj itself.
func (s *Set) Latest(obj *fluxjobv1.FluxJob, now time.Time) *fluxjobv1.FluxJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[obj.UID]
	switch {
	case !ok || e.obj == nil:
		return obj
	case now.Sub(e.at) > TTL:
		delete(s.m, obj.UID)
		return obj
	case slices.Contains(e.replaced, obj.ResourceVersion):
		return e.obj.DeepCopy()
	}
	e.drop()
	return obj
}

// Seen is told of every object the cache receives (an informer event
// handler, see SetupWithManager): once the cache shows this controller's
// latest write of it, or a newer version, the copy is dropped at once
// rather than kept for TTL (10,000 FluxJobs written within the TTL
// held 11 MiB of copies); and a write whose watch event came while it was
// in flight (begin) keeps no copy at all (add).
func (s *Set) Seen(obj *fluxjobv1.FluxJob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inflight[obj.UID]; ok {
		s.inflight[obj.UID] = obj.ResourceVersion
	}
	if e, ok := s.m[obj.UID]; ok && e.obj != nil && !slices.Contains(e.replaced, obj.ResourceVersion) {
		e.drop()
	}
}

// drop forgets the copy: the cache shows the write or a newer one (the
// time of the write still paces status writes).
func (e *entry) drop() { e.obj, e.replaced = nil, nil }

// Since returns how long ago this controller last wrote uid, if it did
// within TTL.
func (s *Set) Since(uid types.UID, now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[uid]
	if !ok || now.Sub(e.at) > TTL {
		return 0, false
	}
	return now.Sub(e.at), true
}

// Remove forgets uid (it is gone).
func (s *Set) Remove(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
	delete(s.inflight, uid)
}

// Watch tells s of every FluxJob the manager's cache receives, so that
// it keeps a written object only until the cache shows it.
func (s *Set) Watch(mgr ctrl.Manager) error {
	inf, err := mgr.GetCache().GetInformer(context.Background(), &fluxjobv1.FluxJob{})
	if err != nil {
		return fmt.Errorf("FluxJob informer: %w", err)
	}
	seen := func(o any) {
		if fj, ok := o.(*fluxjobv1.FluxJob); ok {
			s.Seen(fj)
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { seen(o) },
		UpdateFunc: func(_, o any) { seen(o) },
		DeleteFunc: func(o any) {
			if fj, ok := o.(*fluxjobv1.FluxJob); ok {
				s.Remove(fj.UID)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching FluxJobs for the controller's own writes: %w", err)
	}
	return nil
}

// Pace is how long after this controller's last write of a FluxJob its
// next non-final status write waits (batch/v1 Job paces its status the
// same way); the set keeps a write's time at least that long.
const Pace = time.Second
