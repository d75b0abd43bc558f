package controllers

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// The submission marker (see submit.go for why there is one) lives in
// the annotation fluxjob.io/submit-attempt, written together with the
// cancel finalizer in the one optimistic-locked object patch that comes
// before the submit RPC. Putting it there instead of in a status write of
// its own saves a FluxJob one status write (each costs the API server
// several times a small metadata patch: it validates, encodes and watches
// the whole status). The next status write copies it into the status
// (submitAttemptTime, instance, instanceID), where users read it.
//
// Everything that asks "was a submission attempted, when, and where"
// reads it once per reconcile through readMarker, which takes the newer of
// the status and the annotation.

// submitMarker is the annotation's value.
type submitMarker struct {
	// UID is the FluxJob's: an annotation copied onto another object
	// (a manifest exported with `kubectl get -o yaml` and applied again)
	// is not a marker of that object.
	UID types.UID `json:"uid"`
	// At is when the attempt began, to the nanosecond.
	At fluxjobv1.PreciseTime `json:"at"`
	// Instance is the FluxEndpoint the FluxJob was submitted to.
	Instance string `json:"instance,omitempty"`
	// InstanceID is that instance's identity (identity.go), if known.
	InstanceID string `json:"instanceID,omitempty"`
	// After is a job ID the controller saw on that instance before it
	// wrote the marker (broker.Tracker.Anchor): its submission time, on
	// the broker's clock, bounds the lookup after a crash (broker.Lookup).
	// 0: unknown, the lookup is unbounded.
	After job.ID `json:"after,omitempty"`
	// Attempt is the attempt submitted (status.retry.attempt, retry.go):
	// a marker of an earlier attempt says nothing about the current one.
	Attempt int32 `json:"attempt,omitempty"`
	// Through is an array's high-water mark (array.go): the indexes at
	// positions below it may have been submitted, none above.
	Through int `json:"through,omitempty"`
}

// encode returns the annotation value.
func (m submitMarker) encode() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encoding the submission marker: %w", err)
	}
	return string(b), nil
}

// setOn writes m as obj's marker annotation and adds the cancel finalizer,
// the one metadata patch before a submission (markSubmitting).
func (m submitMarker) setOn(obj *fluxjobv1.FluxJob) error {
	v, err := m.encode()
	if err != nil {
		return err
	}
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	obj.Annotations[fluxjobv1.SubmitAttemptAnnotation] = v
	controllerutil.AddFinalizer(obj, fluxjobv1.CancelFinalizer)
	return nil
}

// parseMarker reads obj's marker annotation. ok is false when there is
// none or it is another object's; err says why a value is unreadable.
func parseMarker(obj *fluxjobv1.FluxJob) (m submitMarker, ok bool, err error) {
	v, found := obj.Annotations[fluxjobv1.SubmitAttemptAnnotation]
	if !found {
		return m, false, nil
	}
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return m, false, fmt.Errorf("annotation %s: %w", fluxjobv1.SubmitAttemptAnnotation, err)
	}
	if m.UID != obj.UID || m.At.IsZero() {
		return m, false, nil
	}
	return m, true, nil
}

// annotationMarker is obj's marker annotation, if it has one of its own.
// An unreadable one (the controller never writes one: someone edited it)
// counts as an attempt at the FluxJob's creation, the earliest it can have
// been: the lookup by name before any submission then covers every job
// the FluxJob may have, so a damaged marker cannot cause a second one.
// A marker, readable or not, only makes the controller look the job up:
// it grants nothing (the gates, route.go, read spec and status only).
func annotationMarker(obj *fluxjobv1.FluxJob) (submitMarker, bool) {
	m, ok, err := parseMarker(obj)
	if err != nil {
		return creationMarker(obj), true
	}
	return m, ok
}

// creationMarker is the marker an unreadable annotation counts as.
func creationMarker(obj *fluxjobv1.FluxJob) submitMarker {
	return submitMarker{UID: obj.UID, At: fluxjobv1.NewPreciseTime(obj.CreationTimestamp.Time)}
}

// marker is what a FluxJob records about its latest submission attempt,
// read once per reconcile (readMarker): the newer of the status
// (submitAttemptTime, instance, instanceID) and the marker annotation.
type marker struct {
	// At is when the attempt began; nil if none was made.
	At *fluxjobv1.PreciseTime
	// Instance is the FluxEndpoint the FluxJob was submitted to or
	// admitted by ("" if neither is recorded).
	Instance string
	// InstanceID is the identity of the instance that holds the job.
	InstanceID string
	// After is the marker annotation's anchor job (submitMarker.After):
	// one submitted before any attempt the marker records.
	After job.ID
	// Err says why the annotation is unreadable (it then counts as an
	// attempt at the FluxJob's creation for the lookup by name, see
	// annotationMarker; it grants nothing).
	Err error
	// Through is the annotation's array high-water mark
	// (submitMarker.Through).
	Through int
}

// readMarker reads obj's marker, decoding the annotation once.
func readMarker(obj *fluxjobv1.FluxJob) marker {
	st := &obj.Status
	m := marker{At: st.SubmitAttemptTime, Instance: st.Instance, InstanceID: st.InstanceID}
	a, ok, err := parseMarker(obj)
	if err != nil {
		m.Err = err
		a, ok = creationMarker(obj), true
		a.Attempt = attemptOf(obj)
	}
	if ok && a.Attempt != attemptOf(obj) {
		ok = false // an earlier attempt's (or forged): nothing of the current one
	}
	if ok {
		if obj.Spec.Instance != "" && a.Instance != obj.Spec.Instance {
			// Not the manager's: it submits to spec.instance only.
			a.Instance, a.InstanceID = "", ""
		}
		m.merge(a)
	}
	return m
}

// merge adds the marker annotation a: its time if newer, and what m does
// not record yet.
func (m *marker) merge(a submitMarker) {
	if m.At == nil || a.At.After(m.At.Time) {
		at := a.At
		m.At = &at
	}
	if m.Instance == "" {
		m.Instance = a.Instance
	}
	if m.InstanceID == "" {
		m.InstanceID = a.InstanceID
	}
	if a.After != 0 {
		// Submitted before this attempt, so before any later one too.
		m.After = a.After
	}
	m.Through = max(m.Through, a.Through)
}

// attempted reports whether a submission was attempted.
func (m marker) attempted() bool { return m.At != nil }

// applyTo copies into st what the marker records that st does not yet:
// the status then carries it from the next write on.
func (m marker) applyTo(st *fluxjobv1.FluxJobStatus) {
	if m.At != nil && (st.SubmitAttemptTime == nil || m.At.After(st.SubmitAttemptTime.Time)) {
		at := *m.At
		st.SubmitAttemptTime = &at
	}
	if st.Instance == "" {
		st.Instance = m.Instance
	}
	if st.InstanceID == "" {
		st.InstanceID = m.InstanceID
	}
}

// markerInStatus reports whether obj's status repeats its marker
// annotation, so that the annotation tells a reader nothing more (see
// CompactFluxJob).
func markerInStatus(obj *fluxjobv1.FluxJob) bool {
	m, ok, err := parseMarker(obj)
	st := &obj.Status
	// The anchor is in the annotation only: kept until the job ID is in
	// the status (the lookup it bounds is for a FluxJob without one). An
	// array's high-water mark is in the annotation only, and always read.
	return ok && err == nil && st.SubmitAttemptTime != nil && st.SubmitAttemptTime.Equal(m.At.Time) &&
		(m.After == 0 || st.JobID != 0) && m.Through == 0 &&
		(m.Instance == "" || st.Instance == m.Instance) && (m.InstanceID == "" || st.InstanceID == m.InstanceID)
}
