package controllers

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/idset"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
	"github.com/fluxjob/fluxjob-operator/internal/pending"
)

// Arrays (spec.array)
//
// An array FluxJob runs one Flux job per index, named
// jobspec.IndexName(obj, index, 0) = fluxjob-<uid>-<index>, with {cc} and
// FLUX_JOB_CC as `flux submit --cc` sets them (jobspec.Template). What
// the manager keeps per index is one byte of state and the job ID
// (internal/array.Run); each active index's job is followed by its own
// future whose callbacks only move the index between states and poke the
// reconciler. The status counts the indexes and lists the succeeded and
// failed ones as idsets, written through the writer's pace like any other
// status: the number of status writes depends on how long the array runs,
// not on its size.
//
// Exactly once per index. Indexes are submitted in position order
// (ascending index). Before any index at position p is handed to the
// executor, the submission marker (marker.go, the same annotation and the
// same optimistic-locked patch as a single FluxJob's) records a high-water
// mark through > p: an index at or above the marker's mark was never
// submitted, by any manager. The mark runs ahead in batches that double
// (arrayBatchMin up to arrayBatchMax), so an array of N indexes costs
// about log2(N/arrayBatchMin)+1 marker writes. A manager that starts
// with a marker treats the positions below its mark as Uncertain, except
// those the status already records as succeeded or failed (the status is
// written by the manager only), and finds their jobs by name in job-list
// (broker.LookupNames: one request per arrayLookupChunk names, bounded by
// the marker's anchor as a single FluxJob's lookup is, so the scan covers
// the jobs that ended since the array began, not the instance's history).
// A job found is followed (or its end recorded), never submitted again;
// a name still missing after the adopt window and the job-list catch-up
// barrier (the same procedure as submit.go's) is submitted again. A lost
// connection makes an index with a job ID Detached (attached again) and
// one without Uncertain (looked up again). The cost of a recovery is one
// lookup per Uncertain index, at most the last batch plus what ended
// since the last status write when the manager dies mid-submission.

const (
	// arrayBatchMin and arrayBatchMax bound how far the marker's mark
	// runs ahead of the submissions.
	arrayBatchMin = 1024
	arrayBatchMax = 65536
	// arrayLookupChunk is the most names one job-list request looks up.
	arrayLookupChunk = 256
	// arrayStepMax is the most indexes one reconcile submits, looks up
	// or cancels: a reconcile stays short, the next one continues.
	arrayStepMax = 8192
	// arrayStatusPace is the least time between two status writes of a
	// running array: its counts change with every index, so the writer's
	// pace (written.Pace) alone would write about once a second for as
	// long as the array runs. The final write is not held.
	arrayStatusPace = 5 * time.Second
	// arraySubmittingMax is the most indexes waiting for Flux's answer
	// to their submission: the executor has their jobspecs (rendered,
	// queued, framed) meanwhile, and Flux answers in order, so a few
	// round trips' worth keeps the broker busy while the manager's peak
	// memory stays small.
	arraySubmittingMax = 1024
	// arraySubmitWait is when to look again while arraySubmittingMax indexes
	// wait for Flux's answer.
	arraySubmitWait = 100 * time.Millisecond
)

// arrayPace is writer.pace with arrayStatusPace for a running array, or
// arrayProgressPace when only its progress changed.
func (r *FluxJobReconciler) arrayPace(obj *fluxjobv1.FluxJob, st fluxjobv1.FluxJobStatus) time.Duration {
	if wait := r.w.pace(obj, st); wait > 0 || st.Phase.IsTerminal() || !significantChange(obj.Status, st) {
		return wait
	}
	pace := arrayStatusPace
	if progressOnly(obj.Status, st) {
		pace = arrayProgressPace(r.now().Sub(obj.CreationTimestamp.Time))
	}
	if ago, ok := r.written.Since(obj.UID, r.now()); ok && ago < pace {
		return pace - ago
	}
	return 0
}

const (
	// arrayPaceAgeShare: an old array's progress is written at most
	// every 1/arrayPaceAgeShare of its age.
	arrayPaceAgeShare = 12
	// arrayProgressPaceMax bounds how stale an old array's counts get.
	arrayProgressPaceMax = 5 * time.Minute
)

// arrayProgressPace is the least time between two status writes of an
// array aged age whose only change is its progress (counts, idsets,
// messages): arrayStatusPace while it is young, then a twelfth of its
// age, at most arrayProgressPaceMax. Its writes then grow with the
// logarithm of its duration rather than with it (about 12 in its first
// minute, 61 in an hour, 12 an hour after that), so that a long array
// costs the API server about what a short one does. A change of phase,
// condition, urgency or pending reason is written at arrayStatusPace
// whatever the age.
func arrayProgressPace(age time.Duration) time.Duration {
	return min(max(arrayStatusPace, age/arrayPaceAgeShare), arrayProgressPaceMax)
}

// progressOnly reports whether updated differs from old only in an
// array's progress: its counts and idsets, the texts that give them
// (messages, the pending message), and times.
func progressOnly(old, updated fluxjobv1.FluxJobStatus) bool {
	strip := func(s fluxjobv1.FluxJobStatus) fluxjobv1.FluxJobStatus {
		s = withoutEvents(s)
		s.Message = ""
		if s.Array != nil {
			s.Array = &fluxjobv1.ArrayStatus{Indexes: s.Array.Indexes, Urgency: s.Array.Urgency}
		}
		if s.Pending != nil {
			s.Pending = &fluxjobv1.FluxJobPending{Reason: s.Pending.Reason}
		}
		conds := make([]metav1.Condition, len(s.Conditions))
		for i, c := range s.Conditions {
			conds[i] = metav1.Condition{Type: c.Type, Status: c.Status, Reason: c.Reason}
		}
		s.Conditions = conds
		return s
	}
	return equality.Semantic.DeepEqual(strip(old), strip(updated))
}

// arrayInput is an array's part of the status input.
type arrayInput struct {
	status    *fluxjobv1.ArrayStatus
	counts    array.Counts
	policyMet bool
	ending    bool
	// failReason and failMessage: the array fails (FailJob,
	// maxFailedIndexes) once no index is active.
	failReason, failMessage string
	// sample is why the array's indexes wait (arraypending.go).
	sample pending.Sample
}

// reconcileArray is Reconcile's path for an admitted array FluxJob (after
// beforeSubmit): recover, submit what parallelism allows, end early when
// the success policy is met, then the status, paced.
func (r *FluxJobReconciler) reconcileArray(ctx context.Context, obj *fluxjobv1.FluxJob, m *marker, rt broker.Route, adm *admission, deps []job.Dependency) (ctrl.Result, error) {
	in := statusInput{Marker: *m, Admission: adm}
	run, tpl, fail := r.arrayRun(obj, *m, deps)
	var requeue, hold time.Duration
	if fail == nil {
		var err error
		requeue, err = r.stepArray(ctx, obj, m, rt, run, tpl)
		if err != nil {
			return ctrl.Result{}, err
		}
		requeue = minRequeue(requeue, r.syncArrayUrgency(ctx, obj, rt, run, &in)) // arrayurgency.go
		in.Array = arrayProgress(obj, run)
		var again time.Duration
		in.Array.sample, in.Waiting, again, hold = r.sampleArray(ctx, obj, rt, run)
		requeue = minRequeue(requeue, again)
	} else {
		in.Failure = fail
	}
	in.reachability(rt)
	st := computeStatus(obj, in, r.now())
	if wait := max(r.arrayPace(obj, st), hold); wait > 0 && !st.Phase.IsTerminal() {
		return ctrl.Result{RequeueAfter: minRequeue(wait, requeue)}, nil
	}
	if err := r.w.writeStatus(ctx, obj, st); err != nil {
		return ctrl.Result{}, err
	}
	if obj.Status.Phase.IsTerminal() {
		r.arrays.Forget(obj.UID)
		return r.afterFinished(ctx, obj, *m)
	}
	if in.Unreachable != "" {
		requeue = minRequeue(requeue, r.Options.UnreachableRetry)
	}
	return ctrl.Result{RequeueAfter: minRequeue(requeue, r.Options.Resync)}, nil
}

// arrayRun returns obj's run, making it from the spec, the marker and the
// status when this manager has none, and the jobspec template; or why the
// array cannot run.
func (r *FluxJobReconciler) arrayRun(obj *fluxjobv1.FluxJob, m marker, deps []job.Dependency) (*array.Run, *jobspec.Template, *failure) {
	if run, ok := r.arrays.Get(obj.UID); ok {
		return run, run.Template, nil
	}
	spec := obj.Spec.Array
	if obj.Spec.Waitable {
		return nil, nil, &failure{Reason: fluxjobv1.ReasonInvalidArray, Message: "spec.waitable cannot be used with spec.array"}
	}
	if obj.Spec.BackoffLimit != nil {
		// The schema refuses it too; an object stored before it did.
		return nil, nil, &failure{Reason: fluxjobv1.ReasonInvalidArray, Message: "spec.backoffLimit is not used with spec.array: set spec.array.backoffLimitPerIndex"}
	}
	if spec.MaxFailedIndexes != nil && spec.BackoffLimitPerIndex == nil {
		return nil, nil, &failure{Reason: fluxjobv1.ReasonInvalidArray, Message: "spec.array.maxFailedIndexes needs spec.array.backoffLimitPerIndex"}
	}
	set, err := idset.Parse(spec.Indexes, fluxjobv1.MaxArrayIndexes)
	if err != nil {
		return nil, nil, &failure{Reason: fluxjobv1.ReasonInvalidArray, Message: "spec.array.indexes: " + err.Error()}
	}
	policy, err := array.ParsePolicy(spec.SuccessPolicy, set)
	if err != nil {
		return nil, nil, &failure{Reason: fluxjobv1.ReasonInvalidArray, Message: err.Error()}
	}
	tpl, jerr := jobspec.BuildTemplate(obj, deps...)
	if jerr != nil {
		return nil, nil, &failure{Reason: jerr.Reason, Message: jerr.Message}
	}
	through := m.Through
	if m.Err != nil {
		through = set.Len() // unreadable: any index may have been submitted
	}
	run := array.New(obj.UID, key(obj), set, through)
	run.Template, run.Policy, run.Retry = tpl, policy, array.RetryOf(spec, obj.Spec.FailurePolicy)
	if st := obj.Status.Array; st != nil {
		known(run, set, st.SucceededIndexes, array.Succeeded)
		known(run, set, st.FailedIndexes, array.Failed)
		run.SetRetries(int(st.Retries))
	}
	if c := meta.FindStatusCondition(obj.Status.Conditions, fluxjobv1.ConditionFailureTarget); c != nil && c.Status == metav1.ConditionTrue {
		run.Fail(c.Reason, c.Message) // an earlier manager was ending it
	}
	r.arrays.Put(run)
	return run, tpl, nil
}

// known applies an idset of final indexes from the status to run.
func known(run *array.Run, set idset.Set, ids string, s array.State) {
	if ids == "" {
		return
	}
	got, err := idset.Parse(ids, fluxjobv1.MaxArrayIndexes)
	if err != nil {
		return // not the manager's: looked up instead
	}
	for _, rg := range got.Ranges() {
		for id := uint64(rg.Lo); id <= uint64(rg.Hi); id++ {
			if p, ok := set.Pos(uint32(id)); ok {
				run.Known(p, s)
			}
		}
	}
}

// stepArray moves the array on: attach Detached indexes, look up
// Uncertain ones, end early when the success policy is met, submit more.
// It returns when to look again.
func (r *FluxJobReconciler) stepArray(ctx context.Context, obj *fluxjobv1.FluxJob, m *marker, rt broker.Route, run *array.Run, tpl *jobspec.Template) (time.Duration, error) {
	if _, _, err := rt.Get(); err != nil {
		if _, unreachable := rt.State(); unreachable == "" {
			return 200 * time.Millisecond, nil // still connecting
		}
		return r.Options.UnreachableRetry, nil
	}
	r.attachDetached(ctx, obj, rt, run)
	wait, err := r.resolveUncertain(ctx, obj, *m, rt, run)
	if err != nil {
		return 0, err
	}
	if lim := obj.Spec.Array.MaxFailedIndexes; lim != nil {
		if n := run.Counts().Failed; n > int(*lim) {
			run.Fail(fluxjobv1.ReasonMaxFailedIndexesExceeded, fmt.Sprintf("%d indexes failed, more than maxFailedIndexes %d", n, *lim))
		}
	}
	why := "success policy of FluxJob " + obj.Namespace + "/" + obj.Name + " met"
	if reason, msg := run.Failure(); reason != "" {
		why = fmt.Sprintf("FluxJob %s/%s fails (%s): %s", obj.Namespace, obj.Name, reason, msg)
		if !run.Ending() {
			run.EndEarly()
			logf.FromContext(ctx).Info("array fails; cancelling the active indexes", "reason", reason, "message", msg)
		}
	}
	if run.Policy != nil && run.Policy.Met(run.Bits(array.Succeeded), run.Counts().Succeeded) && !run.Ending() {
		run.EndEarly()
		logf.FromContext(ctx).Info("array success policy met; cancelling the active indexes")
	}
	if run.Ending() {
		return minRequeue(wait, r.cancelActive(ctx, obj, rt, run, why)), nil
	}
	d, err := r.submitIndexes(ctx, obj, m, rt, run, tpl)
	return minRequeue(wait, d), err
}

// callbacks returns what the future of the index at position p reports
// into run.
func (r *FluxJobReconciler) callbacks(run *array.Run, p int) broker.IndexObserver {
	return &indexFollower{r: r, run: run, p: p}
}

// indexFollower moves position p of run as its future reports.
type indexFollower struct {
	r   *FluxJobReconciler
	run *array.Run
	p   int
}

func (x *indexFollower) ID(id job.ID) { x.run.SetID(x.p, id) }

func (x *indexFollower) Start() {
	if x.run.Move(x.p, array.Running, array.Active) {
		x.r.Tracker.Poke(x.run.Key)
	}
}

func (x *indexFollower) Done(out broker.Outcome) {
	indexDone(x.run, x.p, out) // arrayretry.go
	x.r.Tracker.Poke(x.run.Key)
}

// attachDetached follows again the indexes whose future was lost.
func (r *FluxJobReconciler) attachDetached(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, run *array.Run) {
	for _, p := range run.In(array.Detached, arrayStepMax) {
		id := run.ID(p)
		if err := broker.AttachIndex(ctx, rt, id, r.callbacks(run, p)); err != nil {
			logf.FromContext(ctx).Info("cannot attach to an index's Flux job yet", "index", run.Set.At(p), "jobid", id.F58(), "error", err.Error())
			return
		}
		run.Move(p, array.Active, array.Detached)
	}
}

// resolveUncertain looks the Uncertain indexes up by name (see above):
// found ones are followed or recorded, missing ones become Unsubmitted
// once job-list has caught up after the adopt window. It returns when to
// look again while some wait.
func (r *FluxJobReconciler) resolveUncertain(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, rt broker.Route, run *array.Run) (time.Duration, error) {
	ps := run.In(array.Uncertain, arrayStepMax)
	if len(ps) == 0 {
		return 0, nil
	}
	log := logf.FromContext(ctx)
	missing, ended, d := r.lookupIndexes(ctx, obj, m, rt, run, ps)
	if d > 0 || len(missing) == 0 {
		return d, nil
	}
	at := obj.CreationTimestamp.Time
	if m.At != nil {
		at = m.At.Time
	}
	if lost := run.LostAt(); lost.After(at) {
		at = lost // a submission whose answer was lost may still be in job-ingest
	}
	if ended.After(at) {
		at = ended // a retry follows its attempt's end: it may still be in job-ingest
	}
	age := r.now().Sub(at)
	if wait := r.Options.AdoptWindow - age; wait > 0 {
		log.Info("array indexes may not be listed by job-list yet; looking again before submitting them", "indexes", len(missing), "retryIn", wait)
		return wait, nil
	}
	if err := broker.CatchUpOn(ctx, rt, r.Options.RPCTimeout); err != nil {
		log.Info("job-list has not caught up with job-manager yet; looking again before submitting", "error", err.Error())
		return r.Options.UnreachableRetry, nil
	}
	missing, _, d = r.lookupIndexes(ctx, obj, m, rt, run, missing)
	if d > 0 {
		return d, nil
	}
	if r.Options.PurgeAge > 0 && age > r.Options.PurgeAge {
		msg := fmt.Sprintf("%d indexes of this array were being submitted %s ago, longer than the Flux instance keeps finished jobs (%s), and have no Flux job left: they may have run and been purged, so they are not submitted again",
			len(missing), age.Round(time.Second), r.Options.PurgeAge)
		r.w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonSubmissionUnknown, "Submit", msg)
		for _, p := range missing {
			run.Move(p, array.Failed, array.Uncertain)
		}
		return 0, nil
	}
	log.Info("array indexes of an earlier submission left no Flux job for their current attempt; submitting them", "indexes", len(missing))
	for _, p := range missing {
		run.Resubmit(p)
	}
	return 0, nil
}

// lookupIndexes looks the indexes at positions ps up by name, every
// attempt name an index may have (0..Retry.Window), records what it found,
// and returns those whose current attempt has no Flux job (never
// submitted, or a retry to submit after an attempt that ended), when the
// latest of the ended attempts a retry follows ended, or a requeue delay
// when Flux cannot be asked.
func (r *FluxJobReconciler) lookupIndexes(ctx context.Context, obj *fluxjobv1.FluxJob, m marker, rt broker.Route, run *array.Run, ps []int) ([]int, time.Time, time.Duration) {
	var missing []int
	var ended time.Time
	window := 0
	if run.Retry != nil {
		window = run.Retry.Window
	}
	per := max(1, arrayLookupChunk/(window+1))
	for start := 0; start < len(ps); start += per {
		chunk := ps[start:min(start+per, len(ps))]
		names := make([]string, 0, len(chunk)*(window+1))
		for _, p := range chunk {
			for k := 0; k <= window; k++ {
				names = append(names, jobspec.IndexName(obj, int(run.Set.At(p)), k))
			}
		}
		found, err := broker.LookupNames(ctx, rt, names, m.After, r.Options.RPCTimeout)
		if err != nil {
			logf.FromContext(ctx).Info("cannot look array indexes up yet", "error", err.Error())
			return nil, time.Time{}, r.Options.UnreachableRetry
		}
		for i, p := range chunk {
			a := foundAttempts(run.Retry, names[i*(window+1):(i+1)*(window+1)], found)
			if a.Newest < 0 {
				missing = append(missing, p) // at the attempt the run knows (0 after a restart)
				continue
			}
			run.Recovered(p, a.Newest, a.Ignored)
			j := a.Job
			if j.Active {
				run.SetID(p, j.ID)
				if err := broker.AttachIndex(ctx, rt, j.ID, r.callbacks(run, p)); err != nil {
					run.Move(p, array.Detached, array.Active)
				}
				continue
			}
			if j.Success {
				run.SetID(p, j.ID)
				run.Move(p, array.Succeeded)
				continue
			}
			v := judgeIndex(run.Retry, a.Newest, a.Counted, a.Ignored, endingOfListed(j), run.Ending())
			if v.Step == stepRetry {
				// Attempt Newest+1 follows, submitted once the lookup
				// after the catch-up barrier did not find it either.
				run.Recovered(p, a.Newest+1, a.Ignored+boolInt(!v.Counted))
				missing = append(missing, p)
				if j.Inactive.After(ended) {
					ended = j.Inactive
				}
				continue
			}
			run.SetID(p, j.ID)
			applyIndexVerdict(run, p, v, int32(run.Set.At(p)))
		}
	}
	return missing, ended, 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// submitIndexes submits the next indexes parallelism allows, after a
// marker covering them (see above).
func (r *FluxJobReconciler) submitIndexes(ctx context.Context, obj *fluxjobv1.FluxJob, m *marker, rt broker.Route, run *array.Run, tpl *jobspec.Template) (time.Duration, error) {
	c := run.Counts()
	if obj.Spec.Suspend {
		if c.Submitting > 0 {
			return arraySubmitWait, nil // their job IDs come
		}
		return 0, nil // submitted indexes go on; no new ones
	}
	// At most arraySubmittingMax indexes wait for Flux's answer: what
	// the executor has not sent yet (the rendered jobspecs) stays bounded
	// however fast reconciles come, and so does the manager's memory.
	room := min(c.Unsubmitted, arrayStepMax, arraySubmittingMax-c.Submitting)
	parallel := false // parallelism bounds room: an index's end pokes us
	if p := obj.Spec.Array.Parallelism; p != nil && int(*p)-c.InFlight() <= room {
		room, parallel = int(*p)-c.InFlight(), true
	}
	if room <= 0 {
		if c.Submitting > 0 {
			return arraySubmitWait, nil // the job IDs come (they poke no one)
		}
		return 0, nil
	}
	next := run.NextUnsubmitted()
	if through := run.Through(); next+room > through {
		batch := min(max(arrayBatchMin, through), arrayBatchMax)
		want := min(c.Indexes, max(next+room, through+batch))
		if err := r.markArray(ctx, obj, m, rt, want); err != nil {
			return 0, err
		}
		run.SetThrough(want)
	}
	ps := run.Take(room, run.Through())
	urgency := r.indexUrgency(obj, run) // arrayurgency.go
	opts := job.SubmitOptions{Urgency: &urgency, Debug: obj.Spec.Debug}
	for i, p := range ps {
		err := broker.SubmitIndex(ctx, rt, tpl.Render(int(run.Set.At(p)), run.Attempt(p)), opts, r.callbacks(run, p))
		if err != nil {
			logf.FromContext(ctx).Info("the executor did not take the array's jobs; retrying", "error", err.Error())
			for _, q := range ps[i:] {
				run.Move(q, array.Unsubmitted, array.Submitting)
			}
			return r.Options.UnreachableRetry, nil
		}
	}
	if len(ps) > 0 {
		logf.FromContext(ctx).V(1).Info("submitted array indexes", "count", len(ps), "first", run.Set.At(ps[0]))
	}
	if c.Unsubmitted > len(ps) && !parallel && c.Submitting+len(ps) < arraySubmittingMax {
		return time.Millisecond, nil // more to submit at once
	}
	// The job IDs come (they poke no one): look again for them, and for
	// room to submit more.
	return arraySubmitWait, nil
}

// markArray writes the submission marker with high-water mark through,
// in the one locked patch a submission needs (with the finalizer): a
// conflict means the object changed since it was read, and nothing is
// submitted. The anchor of the array's first marker is kept, so that a
// lookup covers the jobs that ended since the array began.
func (r *FluxJobReconciler) markArray(ctx context.Context, obj *fluxjobv1.FluxJob, m *marker, rt broker.Route, through int) error {
	after := m.After
	if after == 0 {
		a, err := r.Tracker.Anchor(ctx, rt, r.Options.RPCTimeout)
		if err != nil && !broker.IsConnectionError(err) {
			logf.FromContext(ctx).Info("no anchor job for the array's marker; a lookup after a crash will scan all of job-list", "error", err.Error())
		}
		after = a
	}
	sm := submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(r.now()), Instance: rt.Name, InstanceID: rt.InstanceID(), After: after, Through: through}
	base := obj.DeepCopy()
	if err := sm.setOn(obj); err != nil {
		return err
	}
	if err := r.w.patch(ctx, obj, base, false); err != nil {
		return fmt.Errorf("recording the array's submission mark (nothing submitted): %w", err)
	}
	m.merge(sm)
	m.Instance, m.InstanceID = sm.Instance, sm.InstanceID
	return nil
}

// cancelActive asks Flux to cancel the active indexes of an ending array;
// it returns when to look again.
func (r *FluxJobReconciler) cancelActive(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, run *array.Run, reason string) time.Duration {
	_, ctl, err := rt.Get()
	if err != nil {
		return r.Options.UnreachableRetry
	}
	for _, p := range run.ToCancel(arrayStepMax) {
		id := run.ID(p)
		cctx, cancel := context.WithTimeout(ctx, r.Options.RPCTimeout)
		err := job.Cancel(cctx, ctl, id, reason)
		cancel()
		var fe *flux.Error
		switch {
		case err == nil, errors.Is(err, syscall.ENOENT):
			// Cancelled, or already inactive: its future reports the end.
		case errors.As(err, &fe):
			logf.FromContext(ctx).Info("Flux refused to cancel an index's job", "jobid", id.F58(), "error", err.Error())
		default:
			run.Move(p, array.Detached, array.Cancelling) // asked again after re-attaching
			return r.Options.UnreachableRetry
		}
	}
	if run.Counts().InFlight() > 0 {
		return time.Second
	}
	return 0
}

// arrayProgress is the status input of run.
func arrayProgress(obj *fluxjobv1.FluxJob, run *array.Run) *arrayInput {
	c := run.Counts()
	a := &arrayInput{status: run.Status(), counts: c, ending: run.Ending(),
		policyMet: run.Policy != nil && run.Policy.Met(run.Bits(array.Succeeded), c.Succeeded)}
	a.failReason, a.failMessage = run.Failure()
	return a
}

// arrayState is the phase of an array from its counts.
func arrayState(obj *fluxjobv1.FluxJob, a *arrayInput) jobState {
	c := a.counts
	var js jobState
	summary := fmt.Sprintf("%d of %d indexes succeeded, %d failed, %d active", c.Succeeded, c.Indexes, c.Failed, c.InFlight())
	switch {
	case a.failReason != "" && c.InFlight() == 0:
		js.phase, js.reason = fluxjobv1.PhaseFailed, a.failReason
		js.message = a.failMessage + ": " + summary
	case a.policyMet && c.InFlight() == 0:
		js.phase, js.reason = fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonSuccessPolicy
		js.message = "success policy met: " + summary
	case c.Done() && c.Failed > 0:
		js.phase, js.reason = fluxjobv1.PhaseFailed, fluxjobv1.ReasonIndexesFailed
		js.message = summary
	case c.Done() && c.Cancelled > 0:
		js.phase, js.reason, js.message = fluxjobv1.PhaseCancelled, fluxjobv1.ReasonCancelled, summary
	case c.Done():
		js.phase, js.reason, js.message = fluxjobv1.PhaseSucceeded, fluxjobv1.ReasonCompleted, summary
	case c.Running > 0 || c.Succeeded+c.Failed > 0:
		js.phase, js.reason, js.message = fluxjobv1.PhaseRunning, fluxjobv1.ReasonStarted, summary
	case c.InFlight() > 0:
		js.phase, js.reason, js.message = fluxjobv1.PhaseSubmitted, fluxjobv1.ReasonSubmitted, summary
	default:
		js.phase, js.reason, js.message = fluxjobv1.PhasePending, fluxjobv1.ReasonPending, "Waiting to submit "+fmt.Sprint(c.Indexes)+" indexes"
	}
	if obj.Spec.Suspend && !js.phase.IsTerminal() {
		js.message = "suspended: no more indexes are submitted; " + summary
		if c.InFlight() == 0 {
			js.phase, js.reason = fluxjobv1.PhaseSuspended, fluxjobv1.ReasonSuspended
		}
	}
	if a.ending && !js.phase.IsTerminal() {
		js.message = "ending: cancelling the active indexes; " + summary
		if a.failReason != "" {
			js.message = "failing (" + a.failMessage + "): cancelling the active indexes; " + summary
		}
	}
	return js
}

// setArrayConditions replaces the single job's Submitted condition by the
// array's, keeping the lastTransitionTime of old's (the status before
// setConditions, which sets the single job's) while it stays True.
func setArrayConditions(st *fluxjobv1.FluxJobStatus, old []metav1.Condition, a *arrayInput, gen int64, now metav1.Time) {
	if a.failReason != "" {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fluxjobv1.ConditionFailureTarget, Status: metav1.ConditionTrue,
			Reason: a.failReason, Message: fluxjobv1.Clip(a.failMessage, fluxjobv1.MaxMessageLength),
			ObservedGeneration: gen, LastTransitionTime: now})
	}
	c := a.counts
	submitted := c.Indexes - c.Unsubmitted - c.Uncertain - c.Submitting
	if submitted <= 0 || (c.Cancelled == c.Indexes) {
		return
	}
	if prev := meta.FindStatusCondition(old, fluxjobv1.ConditionSubmitted); prev != nil && prev.Status == metav1.ConditionTrue {
		now = prev.LastTransitionTime
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: fluxjobv1.ConditionSubmitted, Status: metav1.ConditionTrue,
		Reason: fluxjobv1.ReasonSubmitted, Message: fmt.Sprintf("%d of %d indexes submitted to Flux", submitted, c.Indexes),
		ObservedGeneration: gen, LastTransitionTime: now})
}

// finalizeArray handles an array FluxJob marked for deletion: no more
// submissions, the active indexes cancelled (after finding, by name, any
// an earlier manager may have submitted), then the finalizer removed once
// none is active or CancelTimeout after the deletion.
func (r *FluxJobReconciler) finalizeArray(ctx context.Context, obj *fluxjobv1.FluxJob, m marker) (ctrl.Result, error) {
	release := func() (ctrl.Result, error) { return r.releaseFinalizer(ctx, obj, r.arrays.Forget) }
	if !controllerutil.ContainsFinalizer(obj, fluxjobv1.CancelFinalizer) {
		r.arrays.Forget(obj.UID)
		return ctrl.Result{}, nil
	}
	// A finished array has no active index, unless it was failed at a
	// gate (route.go) while indexes an earlier manager submitted ran.
	ended := obj.Status.Phase.IsTerminal() && (obj.Status.Array != nil && obj.Status.Array.Active == 0 ||
		obj.Status.Array == nil && m.Through == 0)
	if ended || !m.attempted() {
		return release()
	}
	deadline := obj.DeletionTimestamp.Add(r.Options.CancelTimeout)
	now := r.now()
	run, _, fail := r.arrayRun(obj, m, nil)
	if fail != nil {
		return release() // nothing could have been submitted
	}
	run.EndEarly()
	rt := r.routeOf(ctx, obj, m)
	if _, _, err := rt.Get(); err == nil {
		r.attachDetached(ctx, obj, rt, run)
		if _, err := r.resolveUncertain(ctx, obj, m, rt, run); err != nil {
			return ctrl.Result{}, err
		}
		r.cancelActive(ctx, obj, rt, run, fmt.Sprintf("FluxJob %s/%s deleted", obj.Namespace, obj.Name))
	}
	c := run.Counts()
	if c.InFlight() == 0 {
		return release()
	}
	if now.After(deadline) {
		msg := fmt.Sprintf("%d indexes of the array were not seen to end within %s of the deletion; they may still run", c.InFlight(), r.Options.CancelTimeout)
		r.w.event(obj, corev1.EventTypeWarning, "CancelTimeout", "Cancel", msg)
		return release()
	}
	return ctrl.Result{RequeueAfter: min(time.Second, deadline.Sub(now)+10*time.Millisecond)}, nil
}

// arrayDependency decides a dependency on the array dep: Flux's
// dependencies name one job ID, and an array has one per index, so the
// controller holds the dependant itself until the array's phase settles
// the condition: afterok when the array Succeeded (every index, or its
// success policy), afternotok when it Failed or was Cancelled, afterany
// when it finished, afterstart (after) once it is Running or finished. ok:
// satisfied (the dependant is submitted with no Flux dependency on it);
// a failure: it never can be.
func arrayDependency(d fluxjobv1.Dependency, dep *fluxjobv1.FluxJob) (bool, *failure) {
	p := dep.Status.Phase
	never := func() (bool, *failure) {
		return false, &failure{Reason: fluxjobv1.ReasonDependencyFailed, Message: fmt.Sprintf(
			"dependency %s on array FluxJob %q can never be satisfied: it ended %s (%s)", jobspec.Scheme(d.Condition), d.Name, p, dep.Status.Message)}
	}
	switch jobspec.Scheme(d.Condition) {
	case string(fluxjobv1.DependAfterOK):
		if p == fluxjobv1.PhaseSucceeded {
			return true, nil
		}
		if p.IsTerminal() {
			return never()
		}
	case string(fluxjobv1.DependAfterNotOK):
		if p == fluxjobv1.PhaseFailed || p == fluxjobv1.PhaseCancelled {
			return true, nil
		}
		if p.IsTerminal() {
			return never()
		}
	case string(fluxjobv1.DependAfterAny):
		return p.IsTerminal(), nil
	case string(fluxjobv1.DependAfterStart):
		return p == fluxjobv1.PhaseRunning || p.IsTerminal(), nil
	}
	return false, nil
}
