package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/array"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// An array's urgency (spec.urgency with spec.array)
//
// Each index is submitted with spec.urgency. When spec.urgency changes,
// every index whose Flux job is submitted and not started is given the new
// urgency with job-manager.urgency (Flux has no batch form), in passes of
// at most arrayStepMax indexes per reconcile, arrayUrgencyInflight
// requests in flight on the control connection. An index that started or
// ended meanwhile (Flux answers EINVAL or ENOENT) is left as it is. Once a
// pass has visited every index, status.array.urgency records the urgency
// they all have: a manager that starts reads it there and sends nothing
// while it equals spec.urgency; without it (an earlier manager was
// mid-pass, or never wrote it) it applies spec.urgency to every unstarted
// index once. The tenancy gate refuses an urgency above 16 outside the
// privileged namespaces as for a single FluxJob (nothing is sent), and a
// refusal by Flux stops the pass; either shows as UrgencyApplied=False
// with a Warning event, and is not tried again until spec.urgency changes.
// One event per change, with counts.

// arrayUrgencyInflight is the most job-manager.urgency requests of one
// array in flight at once.
const arrayUrgencyInflight = 64

// syncArrayUrgency applies a changed spec.urgency to run's submitted,
// unstarted indexes (see above), sets in.UrgencyRejected, and returns when
// to look again.
func (r *FluxJobReconciler) syncArrayUrgency(ctx context.Context, obj *fluxjobv1.FluxJob, rt broker.Route, run *array.Run, in *statusInput) time.Duration {
	u := run.Urgency()
	want := specUrgency(obj)
	if !u.Init {
		u.Init = true
		if st := obj.Status.Array; st != nil && st.Urgency != nil {
			u.Applied = int(*st.Urgency)
		} else if !run.Inherited() {
			u.Applied = want // this manager submitted them all, at want
		}
	}
	defer func() { run.SetUrgency(u); in.UrgencyRejected = u.RejectedMsg }()
	if u.Rejected >= 0 && u.Rejected != want {
		u.Rejected, u.RejectedMsg = -1, ""
	}
	switch {
	case run.Ending(), u.Target < 0 && u.Applied == want, u.Rejected == want:
		return 0
	case u.Target != want:
		if msg := tenancyOf(r.Options).urgencyError(obj, want); msg != "" {
			// Flux would take it from the manager; the operator did not
			// grant it to this namespace (tenancy.go).
			u.Rejected, u.RejectedMsg = want, msg
			r.w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency", msg)
			return 0
		}
		from := u.Applied
		if u.Target >= 0 {
			from = u.From // changed again mid-pass
		}
		u = array.UrgencyState{Init: true, Applied: -1, Target: want, From: from, Rejected: -1}
	}
	_, ctl, err := rt.Get()
	if err != nil {
		return r.Options.UnreachableRetry
	}
	ids, started, next, blocked := run.Unstarted(u.Next, arrayStepMax)
	res := setUrgencies(ctx, ctl, ids, want, r.Options.RPCTimeout)
	u.Sent += res.sent
	u.Started += res.started
	if res.err == nil {
		u.Started += started // visited again otherwise
	}
	switch {
	case res.refused != "":
		u.Refused++
		u.Rejected = want
		u.RejectedMsg = fmt.Sprintf("Flux refused urgency %d for job %s: %s", want, res.refusedID.F58(), res.refused)
		if u.Sent == 0 {
			u.Applied = u.From
		}
		u.Target = -1
		r.w.event(obj, corev1.EventTypeWarning, fluxjobv1.ReasonUrgencyRejected, "SetUrgency", u.RejectedMsg+"; "+urgencyCounts(u))
		return 0
	case res.err != nil:
		logf.FromContext(ctx).Info("cannot change the urgency of the array's indexes yet", "urgency", want, "error", res.err.Error())
		return r.Options.UnreachableRetry // this step again
	case blocked:
		u.Next = next
		return arraySubmitWait // a job ID comes
	case next < run.Set.Len():
		u.Next = next
		return time.Millisecond // more to send
	}
	from := "?"
	if u.From >= 0 {
		from = fmt.Sprint(u.From)
	}
	msg := fmt.Sprintf("urgency %s -> %d: %s", from, want, urgencyCounts(u))
	logf.FromContext(ctx).Info("array urgency changed", "from", u.From, "to", want, "applied", u.Sent, "started", u.Started)
	r.w.event(obj, corev1.EventTypeNormal, "UrgencyChanged", "SetUrgency", msg)
	u = array.UrgencyState{Init: true, Applied: want, Target: -1, From: -1, Rejected: -1}
	return 0
}

// indexUrgency is the urgency to submit run's next indexes with:
// submitUrgency, unless the tenancy gate refuses it (an array admitted
// for good whose spec.urgency was raised above 16 since): then the
// urgency the submitted indexes have, or 16 when that is not known.
func (r *FluxJobReconciler) indexUrgency(obj *fluxjobv1.FluxJob, run *array.Run) int {
	want := submitUrgency(obj)
	if tenancyOf(r.Options).urgencyError(obj, want) == "" {
		return want
	}
	if u := run.Urgency(); u.Applied >= 0 {
		return u.Applied
	}
	return int(fluxjobv1.DefaultUrgency)
}

// arraySubmitted reports whether obj is an array of which this manager or
// an earlier one submitted indexes, from what only the manager writes (the
// status, the in-memory run; not the marker): it was admitted for good, so
// a later spec.urgency above 16 is refused as a change (above), not as an
// admission that fails the array while its indexes run.
func (r *FluxJobReconciler) arraySubmitted(obj *fluxjobv1.FluxJob) bool {
	if obj.Spec.Array == nil {
		return false
	}
	if st := obj.Status.Array; st != nil && st.Active+st.Succeeded+st.Failed > 0 {
		return true
	}
	run, ok := r.arrays.Get(obj.UID)
	if !ok {
		return false
	}
	c := run.Counts()
	return c.Submitting+c.Active+c.Running+c.Detached+c.Cancelling+c.Succeeded+c.Failed > 0
}

// urgencyResult is what setUrgencies did.
type urgencyResult struct {
	sent, started int
	// refused is Flux's refusal of one job (refusedID), other than for
	// having started or ended.
	refused   string
	refusedID job.ID
	// err is a connection error or timeout: the step is to be sent again.
	err error
}

// setUrgencies sends job-manager.urgency for each of ids, at most
// arrayUrgencyInflight at once, each within timeout.
func setUrgencies(ctx context.Context, c *flux.Conn, ids []job.ID, urgency int, timeout time.Duration) urgencyResult {
	var (
		mu  sync.Mutex
		res urgencyResult
		wg  sync.WaitGroup
	)
	work := make(chan job.ID)
	for range min(arrayUrgencyInflight, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				_, err := job.SetUrgency(cctx, c, id, urgency)
				cancel()
				var fe *flux.Error
				mu.Lock()
				switch {
				case err == nil:
					res.sent++
				case errors.As(err, &fe) && (errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT)):
					res.started++ // allocated, inactive or purged: left as it is
				case fe != nil:
					if res.refused == "" {
						res.refused, res.refusedID = fe.Message, id
						if fe.Message == "" {
							res.refused = err.Error()
						}
					}
				default:
					if res.err == nil {
						res.err = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		mu.Lock()
		stop := res.refused != "" || res.err != nil
		mu.Unlock()
		if stop {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	return res
}

// urgencyCounts is a pass's counts, for its event.
func urgencyCounts(u array.UrgencyState) string {
	return fmt.Sprintf("%d indexes given it, %d already running or ended, %d refused", u.Sent, u.Started, u.Refused)
}
