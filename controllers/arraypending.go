package controllers

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
)

// Why an array's indexes wait (status.pending of an array; the reason
// itself is internal/pending.Array). The manager keeps no eventlog per
// index, so an array is sampled: its lowest-position index that waits in
// Flux (Active: submitted, not started) has its eventlog read with one
// job-info.lookup, at most once per arrayStatusPace, and once per
// WaitingPace when the sampled index or the spec changed (a status write
// then waits, at most that second, for the new read rather than name an
// index that no longer waits); the instance's Waiting (queues, scheduler
// annotations) is asked for as a single FluxJob's is. The cost of a
// waiting array is at most one small RPC a second, whatever its size; an
// array none of whose indexes waits costs nothing.

// arraySampleTTL drops the sample of an array no longer reconciled (a
// deleted one): a waiting array refreshes its sample every
// arrayStatusPace.
const arraySampleTTL = 10 * time.Minute

// arraySample is the last read of an array's sample.
type arraySample struct {
	pos int
	id  job.ID
	gen int64
	at  time.Time
	sum job.Summary
}

// arraySamples are the samples of the arrays whose indexes wait, by UID.
type arraySamples struct {
	mu sync.Mutex
	m  map[types.UID]arraySample
}

func (s *arraySamples) get(uid types.UID) (arraySample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[uid]
	return e, ok
}

func (s *arraySamples) put(uid types.UID, e arraySample, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.UID]arraySample{}
	}
	for k, old := range s.m {
		if now.Sub(old.at) > arraySampleTTL {
			delete(s.m, k)
		}
	}
	s.m[uid] = e
}

func (s *arraySamples) forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

// sampleArray returns the sample of run and the instance's Waiting when
// the sample waits in SCHED, reading the sample's eventlog when due (see
// above); again is when to look again while indexes wait (0: none
// waits), and hold, when positive, says the sample is out of date (its
// index no longer waits, or the spec changed) and can be read again
// only after hold: the status is not written with it until then.
func (r *FluxJobReconciler) sampleArray(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, run *array.Run) (s pending.Sample, w broker.Waiting, again, hold time.Duration) {
	c := run.Counts()
	ps := run.In(array.Active, 1)
	if run.Ending() || c.Active == 0 || len(ps) == 0 || run.ID(ps[0]) == 0 {
		r.samples.forget(obj.UID)
		return pending.Sample{}, broker.Waiting{}, 0, 0
	}
	p, id, now := ps[0], run.ID(ps[0]), r.now()
	e, had := r.samples.get(obj.UID)
	changed := !had || e.pos != p || e.id != id || e.gen != obj.Generation
	age := now.Sub(e.at)
	switch {
	case !had || age >= arrayStatusPace || changed && age >= broker.WaitingPace:
		e = r.readSample(ctx, rt, e, had, arraySample{pos: p, id: id, gen: obj.Generation, at: now})
		r.samples.put(obj.UID, e, now)
	case changed:
		hold = broker.WaitingPace - age
	}
	s = pending.Sample{Waiting: c.Active, Indexes: c.Indexes, Index: run.Set.At(e.pos), ID: e.id, Summary: e.sum}
	if pending.WantsWaiting(e.sum) {
		w = rt.Waiting(now, e.sum.UserID)
	}
	return s, w, arrayStatusPace, hold
}

// readSample reads the eventlog of next's index into next; on failure it
// keeps the previous sample old (when had), so that a broker that does not
// answer is asked again at the pace, not at every reconcile.
func (r *FluxJobReconciler) readSample(ctx context.Context, rt broker.Route, old arraySample, had bool, next arraySample) arraySample {
	_, ctl, err := rt.Get()
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
		var evs []job.Event
		evs, err = job.LookupEventlog(cctx, ctl, next.id)
		cancel()
		if err == nil {
			next.sum = job.NewSummary(evs)
			return next
		}
	}
	if !errors.Is(err, syscall.ENOENT) {
		logf.FromContext(ctx).V(1).Info("cannot read the eventlog of the array's first waiting index", "jobid", next.id.F58(), "error", err.Error())
	}
	if had {
		old.at = next.at
		return old
	}
	return next // no summary: no reason until the next read
}
