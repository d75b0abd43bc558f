package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

func TestSubmitMarker(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 21, 0, 0, 123456789, time.UTC)
	older, newer := fluxjobv1.NewPreciseTime(t0.Add(-time.Hour)), fluxjobv1.NewPreciseTime(t0.Add(time.Hour))
	own, err := submitMarker{UID: "u1", At: fluxjobv1.NewPreciseTime(t0), Instance: "cluster-a", InstanceID: "id-a"}.encode()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := submitMarker{UID: "u0", At: fluxjobv1.NewPreciseTime(t0), Instance: "cluster-b"}.encode()
	created := t0.Add(-24 * time.Hour).Truncate(time.Second)
	obj := func(ann string, st fluxjobv1.FluxJobStatus) *fluxjobv1.FluxJob {
		o := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u1", CreationTimestamp: metav1.NewTime(created)}, Status: st}
		if ann != "" {
			o.Annotations = map[string]string{fluxjobv1.SubmitAttemptAnnotation: ann}
		}
		return o
	}
	tests := []struct {
		name                 string
		obj                  *fluxjobv1.FluxJob
		wantAt               *time.Time
		wantInstance, wantID string
		wantErr              string
	}{
		{name: "none", obj: obj("", fluxjobv1.FluxJobStatus{})},
		{name: "annotation only (status not written yet)", obj: obj(own, fluxjobv1.FluxJobStatus{}),
			wantAt: &t0, wantInstance: "cluster-a", wantID: "id-a"},
		{name: "status only (written by an earlier version)", obj: obj("", fluxjobv1.FluxJobStatus{SubmitAttemptTime: &older, Instance: "s", InstanceID: "sid"}),
			wantAt: &older.Time, wantInstance: "s", wantID: "sid"},
		{name: "a newer annotation (a resubmission) wins the time", obj: obj(own, fluxjobv1.FluxJobStatus{SubmitAttemptTime: &older, Instance: "s"}),
			wantAt: &t0, wantInstance: "s", wantID: "id-a"},
		{name: "a newer status wins the time", obj: obj(own, fluxjobv1.FluxJobStatus{SubmitAttemptTime: &newer}),
			wantAt: &newer.Time, wantInstance: "cluster-a", wantID: "id-a"},
		{name: "another object's annotation (a copied manifest) is no marker", obj: obj(other, fluxjobv1.FluxJobStatus{})},
		{name: "an unreadable annotation is an attempt at creation", obj: obj("{not json", fluxjobv1.FluxJobStatus{}), wantErr: "fluxjob.io/submit-attempt",
			wantAt: &created},
		{name: "an annotation without a time is no marker", obj: obj(`{"uid":"u1"}`, fluxjobv1.FluxJobStatus{})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseMarker(tc.obj)
			if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseMarker error %v, want %q", err, tc.wantErr)
			}
			at := submitAttempt(tc.obj)
			switch {
			case tc.wantAt == nil && at != nil:
				t.Fatalf("submitAttempt = %v, want none", at)
			case tc.wantAt != nil && (at == nil || !at.Equal(*tc.wantAt)):
				t.Fatalf("submitAttempt = %v, want %v", at, tc.wantAt)
			}
			if got := recordedInstance(tc.obj); got != tc.wantInstance {
				t.Errorf("recordedInstance = %q, want %q", got, tc.wantInstance)
			}
			if got := recordedInstanceID(tc.obj); got != tc.wantID {
				t.Errorf("recordedInstanceID = %q, want %q", got, tc.wantID)
			}
			// The next status write carries what the marker records.
			st := tc.obj.Status
			readMarker(tc.obj).applyTo(&st)
			if got := st.SubmitAttemptTime; tc.wantAt != nil && (got == nil || !got.Equal(*tc.wantAt)) {
				t.Errorf("status.submitAttemptTime after applyMarker = %v, want %v", got, tc.wantAt)
			}
			if st.Instance != tc.wantInstance || st.InstanceID != tc.wantID {
				t.Errorf("status instance %q/%q after applyMarker, want %q/%q", st.Instance, st.InstanceID, tc.wantInstance, tc.wantID)
			}
		})
	}
	// Nanoseconds survive the annotation.
	m, ok, err := parseMarker(obj(own, fluxjobv1.FluxJobStatus{}))
	if !ok || err != nil || m.At.Nanosecond() != 123456789 {
		t.Fatalf("parsed %+v %v %v: want the nanoseconds kept", m, ok, err)
	}
}
