package controllers

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// decodedJob returns a FluxJob as the informer gets it: decoded from JSON,
// every string its own allocation. finished selects a Succeeded job, else
// a Running one.
func decodedJob(t *testing.T, name string, finished bool, annotations map[string]string) *fluxjobv1.FluxJob {
	t.Helper()
	obj := newObj()
	obj.Name, obj.Namespace, obj.UID = name, "team-a", types.UID("uid-"+name)
	obj.Annotations, obj.ResourceVersion = annotations, "42"
	obj.Finalizers = []string{fluxjobv1.CancelFinalizer}
	obj.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}}
	obj.Spec.Command = []string{"sleep", "inf"}
	evs := lifecycle("start")
	in := statusInput{Reachable: true, Obs: &broker.View{JobID: 1234567890123, HasJobID: true, Events: evs}}
	if finished {
		in.Obs.Events = withEvents(evs, ev("finish", 3.75, map[string]any{"status": 0.0}), ev("clean", 3.9, nil))
		in.Obs.Outcome = broker.Outcome{Kind: broker.OutcomeExited}
	}
	obj.Status = computeStatus(obj, in, time.Unix(1700000100, 0))
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var out fluxjobv1.FluxJob
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestCacheTransform(t *testing.T) {
	const lastApplied = `{"apiVersion":"fluxjob.io/v1alpha1","kind":"FluxJob","spec":{"command":["sleep","inf"]}}`
	tests := []struct {
		name        string
		finished    bool
		annotations map[string]string
		// want changes the expected object from the decoded one.
		want func(*fluxjobv1.FluxJob)
	}{
		{name: "running: only managedFields go", want: func(*fluxjobv1.FluxJob) {}},
		{name: "finished: its events go too", finished: true, want: func(o *fluxjobv1.FluxJob) { o.Status.Events = nil }},
		{name: "kubectl apply's copy goes, other annotations stay",
			annotations: map[string]string{lastAppliedAnnotation: lastApplied, "team": "a"},
			want:        func(o *fluxjobv1.FluxJob) { o.Annotations = map[string]string{"team": "a"} }},
		{name: "kubectl apply's copy was the only annotation",
			annotations: map[string]string{lastAppliedAnnotation: lastApplied},
			want:        func(o *fluxjobv1.FluxJob) { o.Annotations = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := decodedJob(t, "a", tc.finished, tc.annotations)
			want := obj.DeepCopy()
			want.ManagedFields = nil
			tc.want(want)
			got, err := CacheTransform()(obj)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("transformed:\n%+v\nwant:\n%+v", got, want)
			}
		})
	}
}

// TestCompactFluxJobShares checks that compaction actually shares the
// repeated strings, across objects and within one.
func TestCompactFluxJobShares(t *testing.T) {
	a, b := decodedJob(t, "a", false, nil), decodedJob(t, "b", false, nil)
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	if same(a.Status.Conditions[0].Type, b.Status.Conditions[0].Type) {
		t.Fatal("decoded objects already share strings: the test proves nothing")
	}
	CompactFluxJob(a)
	CompactFluxJob(b)
	for i := range a.Status.Conditions {
		ca, cb := a.Status.Conditions[i], b.Status.Conditions[i]
		if !same(ca.Type, cb.Type) || !same(ca.Reason, cb.Reason) || !same(string(ca.Status), string(cb.Status)) {
			t.Errorf("condition %s: type, reason or status not shared", ca.Type)
		}
		if ca.Message == a.Status.Message && !same(ca.Message, a.Status.Message) {
			t.Errorf("condition %s: message not shared with status.message", ca.Type)
		}
	}
	if !same(a.Namespace, b.Namespace) || !same(a.Finalizers[0], b.Finalizers[0]) || !same(a.Spec.Command[0], b.Spec.Command[0]) ||
		!same(string(a.Status.Phase), string(b.Status.Phase)) || !same(a.Status.Events[0].Name, b.Status.Events[0].Name) {
		t.Error("namespace, finalizer, command, phase or event name not shared")
	}
	// Messages that name the job stay the object's own (they would only
	// fill the table).
	for _, c := range a.Status.Conditions {
		if strings.Contains(c.Message, a.Status.JobIDF58) {
			cacheStrings.mu.Lock()
			_, kept := cacheStrings.m[c.Message]
			cacheStrings.mu.Unlock()
			if kept {
				t.Errorf("condition %s: job-specific message %q interned", c.Type, c.Message)
			}
		}
	}
}

// TestCompactedTerminalStatusWrite checks the invariant CompactFluxJob
// relies on: the status write of a finished FluxJob read from the cache
// (an observedGeneration update after a spec edit) leaves status.events
// alone on the server.
func TestCompactedTerminalStatusWrite(t *testing.T) {
	obj := decodedJob(t, "a", true, nil)
	CompactFluxJob(obj)
	obj.Generation = 2
	base := obj.DeepCopy()
	obj.Status = computeStatus(obj, statusInput{}, time.Unix(1700000200, 0))
	if !significantChange(base.Status, obj.Status) {
		t.Fatal("a new generation needs no status write: the test proves nothing")
	}
	patch, err := clientMergeLocked(base).Data(obj)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status map[string]json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Status["events"]; ok {
		t.Fatalf("the status patch writes events: %s", patch)
	}
	if string(p.Status["observedGeneration"]) != "2" {
		t.Fatalf("the status patch does not write observedGeneration 2: %s", patch)
	}
}

func TestInternerBounds(t *testing.T) {
	in := &interner{m: map[string]string{}}
	long := strings.Repeat("x", maxInternedLen+1)
	if in.intern(long); len(in.m) != 0 {
		t.Fatalf("a string of %d bytes was kept", len(long))
	}
	for i := range maxInterned + 10 {
		in.intern("s" + strconv.Itoa(i))
	}
	if len(in.m) != maxInterned {
		t.Fatalf("table has %d strings, want the bound %d", len(in.m), maxInterned)
	}
	x := "s" + strconv.Itoa(7)
	if got := in.intern(x); unsafe.StringData(got) == unsafe.StringData(x) {
		t.Fatal("a kept string was not shared")
	}
	y := "s" + strconv.Itoa(maxInterned+5)
	if got := in.intern(y); got != y {
		t.Fatalf("intern(%q) = %q once the table is full", y, got)
	}
}

// TestCompactMarker: the cache drops the submission marker annotation
// once the status repeats it, and only then; what the controller reads of
// the marker is the same before and after.
func TestCompactMarker(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 22, 0, 0, 123456789, time.UTC)
	at, later := fluxjobv1.NewPreciseTime(t0), fluxjobv1.NewPreciseTime(t0.Add(time.Minute))
	marker := func(m submitMarker) string {
		v, err := m.encode()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	own := submitMarker{UID: "u", At: at, Instance: "a", InstanceID: "id-a"}
	tests := []struct {
		name    string
		ann     map[string]string
		status  fluxjobv1.FluxJobStatus
		dropped bool
	}{
		{"status repeats it", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(own)},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a", InstanceID: "id-a"}, true},
		{"status repeats it, a user annotation stays", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(own), "team": "x"},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a", InstanceID: "id-a"}, true},
		{"no status yet (just submitted)", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(own)},
			fluxjobv1.FluxJobStatus{}, false},
		{"a newer marker (a resubmission)", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(submitMarker{UID: "u", At: later, Instance: "a"})},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a"}, false},
		{"another instance in the marker", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(submitMarker{UID: "u", At: at, Instance: "b"})},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a"}, false},
		{"unreadable", map[string]string{fluxjobv1.SubmitAttemptAnnotation: "{"},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at}, false},
		// An array's marker on an instance with no job yet has no
		// anchor; its high-water mark is in the annotation only.
		{"an array's high-water mark, no anchor", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(submitMarker{UID: "u", At: at, Instance: "a", Through: 1024})},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a"}, false},
		{"an anchor, no job ID yet", map[string]string{fluxjobv1.SubmitAttemptAnnotation: marker(submitMarker{UID: "u", At: at, Instance: "a", After: 7})},
			fluxjobv1.FluxJobStatus{SubmitAttemptTime: &at, Instance: "a"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{UID: "u", Annotations: tc.ann}, Status: tc.status}
			before := obj.DeepCopy()
			CompactFluxJob(obj)
			_, kept := obj.Annotations[fluxjobv1.SubmitAttemptAnnotation]
			if kept == tc.dropped {
				t.Fatalf("marker kept = %v, want %v", kept, !tc.dropped)
			}
			if len(tc.ann) > 1 && obj.Annotations["team"] != "x" {
				t.Fatalf("the user's annotation was dropped: %v", obj.Annotations)
			}
			a, b := submitAttempt(before), submitAttempt(obj)
			if (a == nil) != (b == nil) || a != nil && !a.Equal(b.Time) ||
				recordedInstance(before) != recordedInstance(obj) || recordedInstanceID(before) != recordedInstanceID(obj) {
				t.Fatalf("compaction changed what the marker says: %v/%q/%q -> %v/%q/%q", a, recordedInstance(before),
					recordedInstanceID(before), b, recordedInstance(obj), recordedInstanceID(obj))
			}
			// What a recovery reads from the marker beyond the status:
			// the high-water mark always, the anchor until the job ID.
			mb, mo := readMarker(before), readMarker(obj)
			if mb.Through != mo.Through || obj.Status.JobID == 0 && mb.After != mo.After {
				t.Fatalf("compaction lost the marker's through/after: %d/%d -> %d/%d", mb.Through, mb.After, mo.Through, mo.After)
			}
		})
	}
}
