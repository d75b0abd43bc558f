package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// Metrics are the controller's Prometheus collectors. They are registered
// once into controller-runtime's metrics.Registry (served on the
// manager's metrics endpoint) by RegisterMetrics.
var (
	// phaseTransitionsTotal counts FluxJob phase changes written to status,
	// by the new phase.
	phaseTransitionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxjob_phase_transitions_total",
		Help: "FluxJob phase transitions written to status, by new phase.",
	}, []string{"phase"})

	// statusPatchesTotal counts status subresource patches sent to the API
	// server, by result ("success", "conflict", "error").
	statusPatchesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxjob_status_patches_total",
		Help: "FluxJob status patches sent to the API server, by result.",
	}, []string{"result"})

	// failedAttemptsTotal counts the failed attempts of FluxJobs with a
	// failure policy or backoffLimit, and of array indexes with a failure
	// policy or backoffLimitPerIndex (as this manager saw them end), by
	// what the policy did: Retry, Ignore, FailIndex, FailJob, or None (a
	// cancel no rule matched).
	failedAttemptsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxjob_failed_attempts_total",
		Help: "Failed attempts of FluxJobs with retries, by the failure policy's action.",
	}, []string{"action"})

	// trackedJobs is the number of FluxJobs the controller holds executor
	// state for.
	trackedJobs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fluxjob_tracked_jobs",
		Help: "FluxJobs whose Flux job the controller is following.",
	})
)

var registerOnce sync.Once

// RegisterMetrics registers the controller's collectors into
// controller-runtime's metrics.Registry. It is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(phaseTransitionsTotal, statusPatchesTotal, failedAttemptsTotal, trackedJobs)
		broker.RegisterMetrics()
	})
}
