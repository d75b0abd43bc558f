package fluxbridge

import "github.com/fluxjob/fluxjob-operator/fluxbridge/job"

// Observer is told what a lean future (Executor.SubmitLean, AttachLean)
// learns of its job: the job ID, the start and the end. It is for callers
// that follow many jobs at once and need nothing else (an array's
// indexes): a lean future keeps no events (no history to replay, nothing
// charged to MaxRepeatedEventBytes) and holds no callbacks but its
// Observer, and its Observer's calls need no goroutine of their own.
//
// The calls of one future are made one at a time, in this order: JobID
// once, when Flux accepted the job (for AttachLean, before anything else;
// not at all if the submission failed), Start at most once, on the job's
// first start event (replayed from the eventlog on attach), and Done
// exactly once, with what Future.Result would return. They run on the
// goroutine that handles the future's events (a connection's reader, or
// the one that cancelled the future) and must not block.
type Observer interface {
	JobID(id job.ID)
	Start()
	Done(result int, err error)
}

// startBit marks, in a lean future's seen, that Start was queued.
var startBit = uint16(1) << eventBits[job.EventStart]

// observeJobID, observeStart and observeDone are a lean future's queued
// Observer calls (package functions: queueing one allocates nothing).
func observeJobID(f *Future) {
	f.mu.Lock()
	id := f.id
	f.mu.Unlock()
	f.obs.JobID(id)
}

func observeStart(f *Future) { f.obs.Start() }

func observeDone(f *Future) {
	f.mu.Lock()
	r, err := f.result, f.err
	if f.state == stateCancelled {
		r, err = 0, ErrCancelled
	}
	f.mu.Unlock()
	f.obs.Done(r, err)
}
