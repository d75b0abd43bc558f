package v1alpha1_test

import (
	"testing"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go and klog start process-wide background goroutines on first use.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*delayingType[...]).waitingLoop"),
	)
}

func TestPhaseIsTerminal(t *testing.T) {
	cases := map[v1alpha1.FluxJobPhase]bool{
		v1alpha1.PhasePending: false, v1alpha1.PhaseSubmitted: false, v1alpha1.PhaseRunning: false,
		v1alpha1.PhaseSucceeded: true, v1alpha1.PhaseFailed: true, v1alpha1.PhaseCancelled: true,
		"": false,
	}
	for p, want := range cases {
		if got := p.IsTerminal(); got != want {
			t.Errorf("%q.IsTerminal() = %v, want %v", p, got, want)
		}
	}
}

// TestDeepCopyIndependent checks that a deep copy shares no memory with the original.
func TestDeepCopyIndependent(t *testing.T) {
	orig := &v1alpha1.FluxJob{
		Spec: v1alpha1.FluxJobSpec{
			Command:    []string{"echo", "hi"},
			Tasks:      ptr.To[int32](2),
			Env:        []v1alpha1.EnvVar{{Name: "A", Value: "1"}},
			Attributes: &runtime.RawExtension{Raw: []byte(`{"a":1}`)},
			Urgency:    ptr.To[int32](16),
		},
		Status: v1alpha1.FluxJobStatus{
			ExitStatus: ptr.To[int32](0),
			Events:     []v1alpha1.FluxJobEvent{{Name: "submit"}},
			Exception:  &v1alpha1.FluxJobException{Type: "cancel"},
			Conditions: []metav1.Condition{{Type: v1alpha1.ConditionReady}},
		},
	}
	cp := orig.DeepCopy()
	cp.Spec.Command[0] = "x"
	*cp.Spec.Tasks = 9
	cp.Spec.Env[0].Value = "2"
	cp.Spec.Attributes.Raw[0] = '['
	*cp.Status.ExitStatus = 1
	cp.Status.Events[0].Name = "x"
	cp.Status.Exception.Type = "x"
	cp.Status.Conditions[0].Type = "x"
	if orig.Spec.Command[0] != "echo" || *orig.Spec.Tasks != 2 || orig.Spec.Env[0].Value != "1" ||
		orig.Spec.Attributes.Raw[0] != '{' || *orig.Status.ExitStatus != 0 || orig.Status.Events[0].Name != "submit" ||
		orig.Status.Exception.Type != "cancel" || orig.Status.Conditions[0].Type != v1alpha1.ConditionReady {
		t.Errorf("deep copy shares memory with the original: %+v", orig)
	}
	if _, ok := cp.DeepCopyObject().(*v1alpha1.FluxJob); !ok {
		t.Error("DeepCopyObject does not return *FluxJob")
	}
}
