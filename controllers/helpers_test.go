package controllers

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/written"
)

// Shorthands the tests read the controller's state with.

const statusPace = written.Pace

func submitAttempt(obj *fluxjobv1.FluxJob) *fluxjobv1.PreciseTime { return readMarker(obj).At }

func recordedInstance(obj *fluxjobv1.FluxJob) string { return readMarker(obj).Instance }

func recordedInstanceID(obj *fluxjobv1.FluxJob) string { return readMarker(obj).InstanceID }

func clientMergeLocked(base client.Object) client.Patch {
	return client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})
}

// waitUntil polls cond every 10ms for up to 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gaugeValue reads the gauge name{label=value} from controller-runtime's
// metrics registry.
func gaugeValue(name, label, value string) (float64, error) {
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue(), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no %s{%s=%q}", name, label, value)
}

func specObj(spec fluxjobv1.FluxJobSpec) *fluxjobv1.FluxJob {
	return &fluxjobv1.FluxJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "1234-abcd"}, Spec: spec}
}

// counterValue reads the counter name{label=value} from controller-runtime's
// metrics registry (0 if it has not been counted yet).
func counterValue(name, label, value string) float64 {
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
