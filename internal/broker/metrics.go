package broker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The Flux side's Prometheus collectors, registered into
// controller-runtime's metrics.Registry by RegisterMetrics.
var (
	// submissionsTotal counts job submissions to Flux by result: "success"
	// (a job ID came back), "rejected" (the broker refused the jobspec),
	// "error" (anything else) and "adopted" (an existing job found by name
	// and attached instead of submitting), and by instance.
	submissionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxjob_submissions_total",
		Help: "Flux job submissions by instance and result (success, rejected, error, adopted).",
	}, []string{"instance", "result"})

	// executorConnected is 1 while an instance's executor is connected to
	// its broker, else 0, by instance (FluxEndpoint name).
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
)

var registerOnce sync.Once

// RegisterMetrics registers the collectors of the Flux side into
// controller-runtime's metrics.Registry. It is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(submissionsTotal, executorConnected, submitDuration)
	})
}
