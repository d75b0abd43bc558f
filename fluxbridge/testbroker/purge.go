package testbroker

import (
	"slices"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Purge configures the removal of old inactive jobs, as flux-core
// v0.88.0's job-manager does (src/modules/job-manager/purge.c) when its
// TOML config sets
//
//	[job-manager]
//	inactive-age-limit = "7d"   # AgeLimit
//	inactive-num-limit = 10000  # NumLimit
//
// A job is purged when either limit is exceeded, oldest inactive first
// (by the time it became inactive), at most 100 per pass (one KVS
// transaction), one pass per broker heartbeat. A purged job is gone from
// job-list (list, list-id: ENOENT), job-info (lookup, eventlog-watch:
// ENOENT) and job-manager; Eventlog and Jobs no longer show it.
type Purge struct {
	// AgeLimit purges jobs inactive for longer than this; 0 means no age
	// limit.
	AgeLimit time.Duration
	// NumLimit keeps at most this many inactive jobs; 0 means no limit
	// (flux-core's 0 would purge every inactive job: use PurgeInactive
	// for that).
	NumLimit int
	// Period is the time between passes, the broker's heartbeat (2s by
	// default in flux-core). Zero means 2s.
	Period time.Duration
}

// purgeBatch is purge.c's purge_batch_max: KVS unlinks per transaction.
const purgeBatch = 100

// startPurger starts the periodic purge (under s.mu, from Start).
func (s *Server) startPurger(p Purge) {
	period := p.Period
	if period <= 0 {
		period = 2 * time.Second
	}
	age, num := p.AgeLimit, p.NumLimit
	if num <= 0 {
		num = -1
	}
	if age <= 0 {
		age = -1
	}
	stop := make(chan struct{})
	s.purgeStop = stop
	s.purgeWG.Add(1)
	go func() {
		defer s.purgeWG.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.mu.Lock()
				if s.state == srvRunning {
					s.purgeLocked(age, num, purgeBatch)
				}
				s.mu.Unlock()
			}
		}
	}()
}

// PurgeInactive purges inactive jobs now, as `flux job purge` does
// (job-manager.purge): those inactive for longer than ageLimit (negative:
// no age limit) or beyond the newest numLimit (negative: no number limit),
// oldest first, at most batch (1..100) of them. It returns how many were
// purged.
func (s *Server) PurgeInactive(ageLimit time.Duration, numLimit, batch int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeLocked(ageLimit, numLimit, min(max(batch, 1), purgeBatch))
}

// Purged returns how many jobs have been purged since the server was
// created.
func (s *Server) Purged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purged
}

// purgeLocked is purge.c purge_jobs: the queue of inactive jobs, oldest
// first; a job goes while its age exceeds ageLimit or the queue is longer
// than numLimit (a negative limit is no limit).
func (s *Server) purgeLocked(ageLimit time.Duration, numLimit, batch int) int {
	var queue []*jobRecord
	for _, j := range s.order {
		if j.state == stateInactive {
			queue = append(queue, j)
		}
	}
	if len(queue) == 0 {
		return 0
	}
	slices.SortStableFunc(queue, func(a, b *jobRecord) int {
		switch {
		case a.tInactive < b.tInactive:
			return -1
		case a.tInactive > b.tInactive:
			return 1
		}
		return 0
	})
	now := s.timestamp()
	gone := map[job.ID]bool{}
	for _, j := range queue {
		if len(gone) == batch {
			break
		}
		left := len(queue) - len(gone)
		old := ageLimit >= 0 && now-j.tInactive > ageLimit.Seconds()
		many := numLimit >= 0 && left > numLimit
		if !old && !many {
			break
		}
		gone[j.id] = true
	}
	if len(gone) == 0 {
		return 0
	}
	if s.purgedUsers == nil {
		s.purgedUsers = make(map[job.ID]uint32)
	}
	for id := range gone {
		s.purgedUsers[id] = s.jobs[id].userid
		delete(s.jobs, id)
	}
	s.order = slices.DeleteFunc(s.order, func(j *jobRecord) bool { return gone[j.id] })
	s.zombies = slices.DeleteFunc(s.zombies, func(j *jobRecord) bool { return gone[j.id] })
	s.purged += len(gone)
	s.log.V(1).Info("purged inactive jobs", "count", len(gone))
	return len(gone)
}
