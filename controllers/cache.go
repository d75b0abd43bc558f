package controllers

import (
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// lastAppliedAnnotation is where `kubectl apply` keeps a copy of the
// object it applied: as large as the spec, and read by nothing here.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// Bounds of the string table CompactFluxJob shares strings through: only
// short strings are kept, and at most maxInterned of them, so that values
// unique to one object (names, job IDs) cannot grow it without bound.
const (
	maxInternedLen = 64
	maxInterned    = 4096
)

// interner hands out one shared copy of each string it keeps.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

// cacheStrings is the table the informer cache's FluxJobs share.
var cacheStrings = &interner{m: map[string]string{}}

// intern returns the shared copy of s, keeping s if there is room.
func (in *interner) intern(s string) string {
	if s == "" || len(s) > maxInternedLen {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.m[s]; ok {
		return v
	}
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

// CacheTransform is the informer cache's transform for FluxJobs
// (cache.ByObject Transform): it strips managedFields, as the default
// transform does for every other type, then compacts the object
// (CompactFluxJob). Objects of other types only lose their managedFields.
func CacheTransform() toolscache.TransformFunc {
	return func(obj any) (any, error) {
		if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
			if m := a.GetObjectMeta(); m != nil {
				m.SetManagedFields(nil)
			}
		}
		if fj, ok := obj.(*fluxjobv1.FluxJob); ok {
			CompactFluxJob(fj)
		}
		return obj, nil
	}
}

// CompactFluxJob shrinks a FluxJob held in the informer cache without
// changing anything the controller reads or writes. The controller writes
// FluxJobs only through merge patches computed between two copies of the
// cached object, so a field absent from the cache is absent from both
// copies and never written; three such fields are dropped: the
// last-applied-configuration annotation of `kubectl apply` (a copy of the
// spec nothing here reads), the submission marker annotation once the
// status repeats it (markerInStatus: every reader takes the newer of the
// two, and a new marker is written whole; at 10,000 FluxJobs the
// one-entry annotation maps cost the cache about 5 MiB), and
// status.events of a FluxJob in a terminal
// phase (a terminal status is final: computeStatus only updates its
// observedGeneration, and nothing else reads the events of a finished
// job; status.events stays in the API server, for kubectl). And the many
// strings that repeat across objects (condition types, statuses, reasons
// and the fixed messages, phases, event names and small contexts, the
// namespace, the finalizer, short command words) or within one (the
// status message, repeated in most conditions) become shared copies
// instead of one allocation each, as JSON decoding makes them. Strings
// are immutable, so sharing them cannot let one object's change leak into
// another. The cache's objects are never modified by the controller (it
// deep-copies them), and obj must not be either once cached.
func CompactFluxJob(obj *fluxjobv1.FluxJob) {
	in := cacheStrings
	obj.APIVersion, obj.Kind = in.intern(obj.APIVersion), in.intern(obj.Kind)
	obj.Namespace = in.intern(obj.Namespace)
	_, lastApplied := obj.Annotations[lastAppliedAnnotation]
	_, marker := obj.Annotations[fluxjobv1.SubmitAttemptAnnotation]
	if marker {
		marker = markerInStatus(obj)
	}
	if lastApplied || marker {
		ann := make(map[string]string, len(obj.Annotations))
		for k, v := range obj.Annotations {
			if k != lastAppliedAnnotation && (k != fluxjobv1.SubmitAttemptAnnotation || !marker) {
				ann[k] = v
			}
		}
		if len(ann) == 0 {
			ann = nil
		}
		obj.Annotations = ann
	}
	for i, f := range obj.Finalizers {
		obj.Finalizers[i] = in.intern(f)
	}
	for i, c := range obj.Spec.Command {
		obj.Spec.Command[i] = in.intern(c)
	}
	st := &obj.Status
	if st.Phase.IsTerminal() {
		st.Events = nil
	}
	st.Phase = fluxjobv1.FluxJobPhase(in.intern(string(st.Phase)))
	if st.JobIDF58 == "" || !strings.Contains(st.Message, st.JobIDF58) {
		st.Message = in.intern(st.Message)
	}
	for i := range st.Events {
		e := &st.Events[i]
		e.Name, e.Context = in.intern(e.Name), in.intern(e.Context)
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.Type, c.Reason = in.intern(c.Type), in.intern(c.Reason)
		c.Status = metav1.ConditionStatus(in.intern(string(c.Status)))
		switch {
		case c.Message == st.Message:
			c.Message = st.Message
		case st.JobIDF58 == "" || !strings.Contains(c.Message, st.JobIDF58):
			// Not about this job in particular: likely the same text
			// as in other FluxJobs.
			c.Message = in.intern(c.Message)
		}
	}
}
