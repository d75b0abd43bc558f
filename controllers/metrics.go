package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics are the controller's Prometheus collectors. They are registered
// once into controller-runtime's metrics.Registry (served on the
// manager's metrics endpoint) by RegisterMetrics.
var (
	// submissionsTotal counts job submissions to Flux by result: "success"
	// (a job ID came back), "rejected" (the broker refused the jobspec),
	// "error" (anything else) and "adopted" (an existing job found by name
	// and attached instead of submitting), and by instance.
	submissionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxjob_submissions_total",
		Help: "Flux job submissions by instance and result (success, rejected, error, adopted).",
	}, []string{"instance", "result"})

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

	// trackedJobs is the number of FluxJobs the controller holds executor
	// state for.
	trackedJobs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fluxjob_tracked_jobs",
		Help: "FluxJobs whose Flux job the controller is following.",
	})

	// executorConnected is 1 while an instance's executor is connected to
	// its broker, else 0, by instance (FluxInstance name).
	executorConnected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fluxjob_executor_connected",
		Help: "1 while the executor of a Flux instance is connected to its broker, else 0, by instance.",
	}, []string{"instance"})

	// submitDuration observes the time from handing a jobspec to the
	// executor until its job ID (or error) is known.
	submitDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "fluxjob_submit_duration_seconds",
		Help:    "Time from submitting a FluxJob to Flux until its job ID (or error) is known, by instance.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"instance"})

	// eventsDroppedTotal counts Kubernetes events the EventRecorder did
	// not write (queue full, API server refusing or unreachable).
	eventsDroppedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fluxjob_events_dropped_total",
		Help: "Kubernetes events about FluxJobs that were not written (queue full, or the API server refused or could not be reached).",
	})
)

var registerOnce sync.Once

// RegisterMetrics registers the controller's collectors into
// controller-runtime's metrics.Registry. It is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(submissionsTotal, phaseTransitionsTotal, statusPatchesTotal,
			trackedJobs, executorConnected, submitDuration, eventsDroppedTotal)
	})
}
