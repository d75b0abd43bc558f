package broker

import (
	"slices"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// maxTrackedEvents bounds the eventlog events kept per job in memory. A
// Flux job's main eventlog is short (submit ... clean, about a dozen
// events), but urgency/priority/debug events can repeat; once the bound is
// reached the oldest repeatable events are dropped first. The status shows
// at most the last fluxjobv1.MaxStatusEvents of them.
const maxTrackedEvents = fluxjobv1.MaxStatusEvents

// repeatContextCost bounds the context of an event kept for a job that
// already has one of that name: its essential members (job.EssentialKeys)
// and what fits. A broker streaming events to every job then holds a few
// KiB per job here, not tens (fluxbridge's budget bounds the Futures').
const repeatContextCost = 256

// OutcomeKind says how a Flux job's future ended.
type OutcomeKind int

const (
	// OutcomeNone: the future has not completed.
	OutcomeNone OutcomeKind = iota
	// OutcomeExited: the job finished; exitCode is its result (>= 0, or
	// -signum).
	OutcomeExited
	// OutcomeException: the job ended on a fatal exception (cancel, exec
	// failure, timeout...).
	OutcomeException
	// OutcomeInvalidJobspec: the broker rejected the jobspec at submit.
	OutcomeInvalidJobspec
	// OutcomeNoSuchJob: the job ID matches no job at the broker.
	OutcomeNoSuchJob
	// OutcomeLost: the connection to the broker was lost. The job's state
	// is unknown, not final: the FluxJob is re-attached after reconnecting.
	OutcomeLost
	// OutcomeAborted: the future was cancelled before it ran (executor
	// shut down). Not final either.
	OutcomeAborted
	// OutcomeError: any other error; final, reported with its message.
	OutcomeError
)

// Final reports whether the outcome settles the FluxJob for good.
func (k OutcomeKind) Final() bool {
	switch k {
	case OutcomeNone, OutcomeLost, OutcomeAborted:
		return false
	}
	return true
}

// Outcome is how a future completed, classified by the code that binds
// futures to the tracker (see Bind).
type Outcome struct {
	Kind     OutcomeKind
	ExitCode int
	// Exception fields, for OutcomeException.
	ExcType     string
	ExcSeverity int
	ExcNote     string
	// Message is the error text (the broker's, for OutcomeInvalidJobspec).
	Message string
}

// View is a snapshot of what the tracker knows about one FluxJob's
// Flux job.
type View struct {
	// Token identifies the future that produced this View; a new
	// attach after a lost connection gets a new token.
	Token uint64
	// JobID is valid when HasJobID.
	JobID    uint64
	HasJobID bool
	// Instance is the identity of the Flux instance the future talks to
	// (InstanceIdentity; "" if unknown).
	Instance string
	// Events seen so far, oldest first (bounded, see maxTrackedEvents).
	Events []job.Event
	// Outcome is set once the future completed.
	Outcome Outcome
	// SubmittedAt is when the controller handed the job to the executor
	// (zero for attached jobs).
	SubmittedAt time.Time
	// LastSeen is when the tracker last heard from the future.
	LastSeen time.Time
	// CancelRequested is when the finalizer asked Flux to cancel the job.
	CancelRequested time.Time
	// UrgencyRequested is the last urgency successfully sent to Flux (-1:
	// none); UrgencyRejected the last one Flux refused (-1: none), with
	// UrgencyError the broker's message.
	UrgencyRequested int
	UrgencyRejected  int
	UrgencyError     string
}

// Done reports whether the future completed (for any reason).
func (o View) Done() bool { return o.Outcome.Kind != OutcomeNone }

// Summary interprets the events seen so far (job.Summary: the one reading
// of a job's eventlog, shared with fluxbridge.Future).
func (o View) Summary() job.Summary { return job.NewSummary(o.Events) }

type tracked struct {
	key      types.NamespacedName
	instance string // the FluxEndpoint (name) the future runs on
	obs      View
	// out reads the job's output once it ended (see output.go).
	out *outputCollector
}

// anchor is a job ID seen on one connection of an instance (lookup.go):
// a new connection may reach another instance, where it means nothing.
type anchor struct {
	conn *flux.Conn
	id   job.ID
}

// Tracker holds, per FluxJob UID, what the executor's callbacks reported
// about its Flux job. Callbacks only write here and poke the reconciler
// through a non-blocking channel send; they never call the API server.
// Reconcile reads snapshots. Safe for concurrent use.
type Tracker struct {
	notify chan event.TypedGenericEvent[client.Object]
	now    func() time.Time

	mu        sync.Mutex
	jobs      map[types.UID]*tracked
	nextToken uint64
	dropped   uint64
	// anchors holds, per instance name, the highest job ID seen on its
	// current connection (lookup.go).
	anchors map[string]anchor
}

// NewTracker returns an empty tracker whose notifications go to a channel
// with the given buffer (see Events).
func NewTracker(buffer int) *Tracker {
	return &Tracker{
		notify: make(chan event.TypedGenericEvent[client.Object], buffer),
		now:    time.Now,
		jobs:   map[types.UID]*tracked{},
	}
}

// Events is the channel the tracker pokes when a job's state changes; it
// is meant for source.Channel.
func (t *Tracker) Events() <-chan event.TypedGenericEvent[client.Object] { return t.notify }

// Dropped returns how many notifications were dropped because the channel
// was full (the state itself is never dropped; a resync picks it up).
func (t *Tracker) Dropped() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropped
}

// Len returns the number of tracked FluxJobs.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.jobs)
}

// Get returns a copy of the View for uid.
func (t *Tracker) Get(uid types.UID) (View, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.jobs[uid]
	if !ok {
		return View{}, false
	}
	return copyObservation(tr.obs), true
}

func copyObservation(o View) View {
	o.Events = append([]job.Event(nil), o.Events...)
	return o
}

// Begin starts tracking a new future for uid, replacing what was tracked
// before (a future lost with its connection, say), and returns the token
// the future's callbacks must report with. submitted tells a submission
// (its time is recorded) from an attach.
func (t *Tracker) Begin(uid types.UID, key types.NamespacedName, submitted bool) uint64 {
	return t.BeginOn("", uid, key, submitted)
}

// BeginOn is Begin for a future on the FluxEndpoint named instance (see
// PokeUnsettled).
func (t *Tracker) BeginOn(instance string, uid types.UID, key types.NamespacedName, submitted bool) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextToken++
	obs := View{Token: t.nextToken, UrgencyRequested: -1, UrgencyRejected: -1, LastSeen: t.now()}
	if old, ok := t.jobs[uid]; ok {
		old.dropOutput()
		obs.CancelRequested = old.obs.CancelRequested
		obs.UrgencyRejected = old.obs.UrgencyRejected
		obs.UrgencyError = old.obs.UrgencyError
	}
	if submitted {
		obs.SubmittedAt = obs.LastSeen
	}
	t.jobs[uid] = &tracked{key: key, instance: instance, obs: obs}
	return obs.Token
}

// update runs fn on uid's View if token is still current, then
// notifies the reconciler.
func (t *Tracker) update(uid types.UID, token uint64, fn func(*View)) {
	t.mu.Lock()
	tr, ok := t.jobs[uid]
	if !ok || tr.obs.Token != token {
		t.mu.Unlock()
		return
	}
	fn(&tr.obs)
	tr.obs.LastSeen = t.now()
	key := tr.key
	t.mu.Unlock()
	t.Poke(key)
}

// Poke sends a notification for key without blocking.
func (t *Tracker) Poke(key types.NamespacedName) {
	obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	select {
	case t.notify <- event.TypedGenericEvent[client.Object]{Object: obj}:
	default:
		t.mu.Lock()
		t.dropped++
		t.mu.Unlock()
	}
}

// SetJobID records the job ID reported by the future with token.
func (t *Tracker) SetJobID(uid types.UID, token uint64, id uint64) {
	t.mu.Lock()
	if tr, ok := t.jobs[uid]; ok && tr.obs.Token == token {
		t.noteAnchorLocked(tr.instance, job.ID(id))
	}
	t.mu.Unlock()
	t.update(uid, token, func(o *View) { o.JobID, o.HasJobID = id, true })
}

// noteAnchorLocked records id as seen on instance (lookup.go Anchor): it
// raises the anchor of the instance's current connection, if one was
// taken.
func (t *Tracker) noteAnchorLocked(instance string, id job.ID) {
	if a, ok := t.anchors[instance]; ok && id > a.id {
		a.id = id
		t.anchors[instance] = a
	}
}

// setAnchor records id as the anchor of instance's connection conn.
func (t *Tracker) setAnchor(instance string, conn *flux.Conn, id job.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.anchors == nil {
		t.anchors = map[string]anchor{}
	}
	if a, ok := t.anchors[instance]; ok && a.conn == conn && a.id >= id {
		return
	}
	t.anchors[instance] = anchor{conn: conn, id: id}
}

// anchorOf returns the anchor of instance's connection conn, if one was
// taken on that connection (0 with ok: the instance had no job then).
func (t *Tracker) anchorOf(instance string, conn *flux.Conn) (job.ID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.anchors[instance]
	if !ok || a.conn != conn {
		return 0, false // none yet, or taken on an earlier connection
	}
	return a.id, true
}

// SetInstance records the identity of the Flux instance the future with
// token talks to.
func (t *Tracker) SetInstance(uid types.UID, token uint64, instance string) {
	t.update(uid, token, func(o *View) { o.Instance = instance })
}

// AddEvent records an eventlog event reported by the future with token.
func (t *Tracker) AddEvent(uid types.UID, token uint64, ev job.Event) {
	t.update(uid, token, func(o *View) {
		for i := range o.Events {
			if o.Events[i].Name == ev.Name {
				ev.Context = job.ClipContext(ev.Context, repeatContextCost)
				break
			}
		}
		o.Events = appendBounded(o.Events, ev, maxTrackedEvents)
	})
}

// Finish records how the future with token completed.
func (t *Tracker) Finish(uid types.UID, token uint64, out Outcome) {
	t.update(uid, token, func(o *View) { o.Outcome = out })
}

// MarkCancelRequested records that the job's cancellation was requested,
// unless it already was; it returns the recorded time.
func (t *Tracker) MarkCancelRequested(uid types.UID, key types.NamespacedName) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.jobs[uid]
	if !ok {
		tr = &tracked{key: key, obs: View{UrgencyRequested: -1, UrgencyRejected: -1}}
		t.jobs[uid] = tr
	}
	if tr.obs.CancelRequested.IsZero() {
		tr.obs.CancelRequested = t.now()
	}
	return tr.obs.CancelRequested
}

// SetUrgencyResult records the outcome of a job.SetUrgency call: errMsg
// empty means urgency was accepted.
func (t *Tracker) SetUrgencyResult(uid types.UID, urgency int, errMsg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.jobs[uid]
	if !ok {
		return
	}
	if errMsg == "" {
		tr.obs.UrgencyRequested = urgency
		tr.obs.UrgencyRejected, tr.obs.UrgencyError = -1, ""
		return
	}
	tr.obs.UrgencyRejected, tr.obs.UrgencyError = urgency, errMsg
}

// Forget stops tracking uid.
func (t *Tracker) Forget(uid types.UID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.jobs[uid]; ok {
		tr.dropOutput()
	}
	delete(t.jobs, uid)
}

// ForgetKey stops tracking whatever is tracked under key (the object is
// gone and its UID unknown).
func (t *Tracker) ForgetKey(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for uid, tr := range t.jobs {
		if tr.key == key {
			tr.dropOutput()
			delete(t.jobs, uid)
		}
	}
}

// PokeUnsettled notifies the reconciler about every tracked FluxJob whose
// future has not reached a final outcome (used after a reconnect), and
// returns their keys, sorted. Given instances, only the FluxJobs on those
// instances are poked.
func (t *Tracker) PokeUnsettled(instances ...string) []types.NamespacedName {
	t.mu.Lock()
	var keys []types.NamespacedName
	for _, tr := range t.jobs {
		if len(instances) > 0 && !slices.Contains(instances, tr.instance) {
			continue
		}
		if !tr.obs.Outcome.Kind.Final() {
			keys = append(keys, tr.key)
		}
	}
	t.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		t.Poke(k)
	}
	return keys
}

// keepEvent reports whether an event must survive trimming: the ones the
// status is computed from, validate and depend included (the pending
// reason); repeatable ones (urgency, priority, dependency-add/-remove) are
// not: a broker may stream them, and the oldest go first.
func keepEvent(ev job.Event) bool {
	switch ev.Name {
	case job.EventSubmit, job.EventAlloc, job.EventStart, job.EventFinish, job.EventClean, job.EventException,
		job.EventValidate, job.EventDepend:
		return true
	}
	return false
}

// appendBounded inserts ev in timestamp order (after events with the same
// timestamp: callbacks for different event names may replay past events
// name by name, so arrival order is not always eventlog order), then,
// while there are more than max events, drops the oldest event that
// keepEvent does not protect (or the oldest event if all are protected).
func appendBounded(evs []job.Event, ev job.Event, max int) []job.Event {
	i := len(evs)
	for i > 0 && evs[i-1].Timestamp > ev.Timestamp {
		i--
	}
	evs = append(evs, job.Event{})
	copy(evs[i+1:], evs[i:])
	evs[i] = ev
	for len(evs) > max {
		drop := 0
		for i, e := range evs {
			if !keepEvent(e) {
				drop = i
				break
			}
		}
		evs = append(evs[:drop], evs[drop+1:]...)
	}
	return evs
}
