// Package recorder writes Kubernetes events (events.k8s.io) without ever
// blocking a reconcile: a bounded queue, one writer goroutine, drops
// counted (fluxjob_events_dropped_total).
package recorder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Options configure a Recorder. Zero values mean the
// defaults.
type Options struct {
	// Controller is the events' reportingController (required), for
	// example "fluxjob-controller".
	Controller string
	// Instance is the events' reportingInstance. Default: Controller.
	Instance string
	// QueueSize bounds the events waiting to be written; an event that
	// finds the queue full is dropped (and counted). Default 1024.
	QueueSize int
	// Workers is the number of events written at once. Default 4.
	Workers int
	// Timeout bounds each write. Default 10s.
	Timeout time.Duration
	// Attempts is how many times an event is tried when the API server
	// cannot be reached or asks to retry (timeouts, 429, 5xx). Default 3.
	Attempts int
	// Logger reports the events that could not be written.
	Logger logr.Logger
}

// Recorder is an events.EventRecorder that writes each Event
// (events.k8s.io/v1) with one create from a bounded queue, and keeps
// nothing once it is written.
//
// client-go's events broadcaster, behind manager.GetEventRecorder, keeps a
// copy of every event it emitted for 6 to 12 minutes, to fold repeats of
// the same event into a series, and starts a goroutine per event: at
// 10,000 FluxJobs that was about a tenth of the manager's heap, growing
// with the event rate rather than with the number of FluxJobs. The
// controller emits one event per phase change of a FluxJob, which do not
// repeat, so series would buy nothing. Events are best effort, as with
// the broadcaster: one that cannot be written after Attempts tries, or
// that finds the queue full, is dropped and counted in Dropped.
//
// Add it to the manager (it is a Runnable); events recorded before it
// starts wait in the queue.
type Recorder struct {
	c      client.Client
	scheme *runtime.Scheme
	opts   Options
	queue  chan *eventsv1.Event
	now    func() time.Time

	mu      sync.Mutex
	dropped uint64
}

// New returns a recorder that writes through c; scheme must
// know the types of the objects events are recorded for.
func New(c client.Client, scheme *runtime.Scheme, opts Options) *Recorder {
	if opts.Instance == "" {
		opts.Instance = opts.Controller
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Recorder{c: c, scheme: scheme, opts: opts, queue: make(chan *eventsv1.Event, opts.QueueSize), now: time.Now}
}

var _ events.EventRecorder = (*Recorder)(nil)

// Eventf queues an event about regarding (and related, if not nil), as
// events.EventRecorder does; it never blocks.
func (r *Recorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		r.opts.Logger.Error(err, "not recording an event about an object without a reference", "reason", reason)
		return
	}
	now := r.now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			// As client-go names them (events.GenerateEventName).
			Name:      fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()),
			Namespace: ref.Namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.opts.Controller,
		ReportingInstance:   r.opts.Instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                fmt.Sprintf(note, args...),
		Type:                eventtype,
	}
	if ev.Namespace == "" {
		ev.Namespace = metav1.NamespaceDefault
	}
	if related != nil {
		if rel, err := reference.GetReference(r.scheme, related); err == nil {
			ev.Related = rel
		}
	}
	select {
	case r.queue <- ev:
	default:
		r.drop()
	}
}

// Dropped returns how many events were not written (queue full, or the
// API server refused or could not be reached).
func (r *Recorder) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

func (r *Recorder) drop() {
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
	droppedTotal.Inc()
}

// Start writes queued events with Workers goroutines until ctx ends;
// events still queued then are dropped. It implements manager.Runnable.
func (r *Recorder) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range r.opts.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-r.queue:
					r.write(ctx, ev)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection is false: a replica that is not the leader records
// no events, and the leader's must be written as soon as it leads.
func (r *Recorder) NeedLeaderElection() bool { return false }

// write creates ev, trying again (after 1s, 2s...) while the API server
// cannot be reached or asks to retry.
func (r *Recorder) write(ctx context.Context, ev *eventsv1.Event) {
	var err error
	for attempt := range r.opts.Attempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				r.drop()
				return
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		wctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		ev.ResourceVersion = ""
		err = r.c.Create(wctx, ev)
		cancel()
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		if !retriable(err) {
			break
		}
	}
	if ctx.Err() == nil {
		r.opts.Logger.Error(err, "event not written", "object", ev.Regarding.Namespace+"/"+ev.Regarding.Name,
			"reason", ev.Reason, "type", ev.Type)
	}
	r.drop()
}

// retriable reports whether a failed create may succeed if tried again.
func retriable(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // no answer from the API server
	}
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)
}

// droppedTotal counts Kubernetes events a Recorder did not write (queue
// full, API server refusing or unreachable).
var droppedTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "fluxjob_events_dropped_total",
	Help: "Kubernetes events about FluxJobs that were not written (queue full, or the API server refused or could not be reached).",
})

var registerOnce sync.Once

// RegisterMetrics registers the recorder's collectors into
// controller-runtime's metrics.Registry. It is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() { metrics.Registry.MustRegister(droppedTotal) })
}
