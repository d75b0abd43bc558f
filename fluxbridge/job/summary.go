package job

import (
	"encoding/json"
	"slices"
	"strconv"
)

// Names of the events of a job's main eventlog (RFC 21) that flux-core 0.88
// posts. Compare Event.Name with these instead of bare strings.
const (
	EventSubmit      = "submit"
	EventValidate    = "validate"
	EventDepend      = "depend"
	EventPriority    = "priority"
	EventUrgency     = "urgency"
	EventAlloc       = "alloc"
	EventStart       = "start"
	EventException   = "exception"
	EventFinish      = "finish"
	EventRelease     = "release"
	EventFree        = "free"
	EventClean       = "clean"
	EventDebug       = "debug"
	EventFluxRestart = "flux-restart"
	// EventDependencyAdd and EventDependencyRemove hold a job in DEPEND
	// until every description added was removed (RFC 26; posted by the
	// dependency-after, begin-time and dependency-singleton plugins, and
	// by flux-accounting for its limits).
	EventDependencyAdd    = "dependency-add"
	EventDependencyRemove = "dependency-remove"
)

// MaxSummaryDependencies bounds the outstanding dependencies a Summary
// keeps (a broker is untrusted input); the count goes on.
const MaxSummaryDependencies = 16

// Summary is what a job's main eventlog says about the job, read once:
// fold the events into it with Add, in eventlog order. A zero Summary is a
// job of which nothing was seen yet. Times are eventlog timestamps (seconds
// since the epoch); 0 means the event was not seen.
//
// This is the one place that interprets a job's events: fluxbridge.Future
// decides its result from it, and the manager derives a FluxJob's phase
// from it.
type Summary struct {
	// SubmitTime is the "submit" event's time.
	SubmitTime float64
	// Urgency is the latest urgency ("submit", then "urgency" events), or
	// -1 while none was seen.
	Urgency int
	// AllocTime is the "alloc" event's time: resources were assigned.
	AllocTime float64
	// StartTime is the "start" event's time: the job shell started.
	StartTime float64
	// FinishTime is the "finish" event's time; Status its wait status when
	// HasStatus (a finish event without a readable status has none).
	FinishTime float64
	Status     WaitStatus
	HasStatus  bool
	// Fatal is the first exception of severity 0, FatalTime its time.
	Fatal     *ExceptionContext
	FatalTime float64
	// CleanTime is the "clean" event's time: the job is inactive.
	CleanTime float64
	// Exceptions are the first MaxSummaryExceptions exceptions raised on
	// the job, of any severity, in eventlog order (a failure policy
	// matches them; non-fatal ones do not end the job).
	Exceptions []ExceptionContext

	// UserID is the submitting user ("submit" event), -1 if unknown.
	UserID int
	// UrgencyTime is when the latest urgency was set (submit or urgency).
	UrgencyTime float64
	// ValidateTime, DependTime and PriorityTime are the times of the
	// "validate" (the job entered DEPEND), "depend" (its dependencies were
	// met: PRIORITY) and latest "priority" events (SCHED).
	ValidateTime float64
	DependTime   float64
	PriorityTime float64
	// Priority is the latest priority, or -1 while none was seen.
	Priority int
	// Dependencies are the descriptions added and not removed yet, in the
	// order they were added (at most MaxSummaryDependencies; Pending
	// counts them all), and DependencyTime the latest addition's time.
	Dependencies   []string
	Pending        int
	DependencyTime float64
}

// MaxSummaryExceptions bounds Summary.Exceptions: a broker may raise any
// number of non-fatal exceptions on a job.
const MaxSummaryExceptions = 8

// NewSummary returns the Summary of events, in eventlog order.
func NewSummary(events []Event) Summary {
	s := Summary{Urgency: -1, Priority: -1, UserID: -1}
	for i := range events {
		s.Add(events[i])
	}
	return s
}

// Add folds one event into s. A zero Summary reads Urgency, Priority and
// UserID as 0 until an event sets them; use NewSummary for -1.
func (s *Summary) Add(ev Event) {
	switch ev.Name {
	case EventSubmit, EventUrgency:
		if u, ok := ContextInt(ev.Context, "urgency"); ok {
			s.Urgency, s.UrgencyTime = u, ev.Timestamp
		}
		if ev.Name == EventSubmit {
			s.SubmitTime = ev.Timestamp
			if u, ok := ContextInt(ev.Context, "userid"); ok {
				s.UserID = u
			}
		}
	case EventValidate:
		s.ValidateTime = ev.Timestamp
	case EventDepend:
		s.DependTime = ev.Timestamp
	case EventPriority:
		s.PriorityTime = ev.Timestamp
		if p, ok := ContextInt(ev.Context, "priority"); ok {
			s.Priority = p
		}
	case EventDependencyAdd, EventDependencyRemove:
		s.dependency(ev)
	case EventAlloc:
		s.AllocTime = ev.Timestamp
	case EventStart:
		s.StartTime = ev.Timestamp
	case EventException:
		if exc, ok := FatalException(ev); ok && s.Fatal == nil {
			s.Fatal, s.FatalTime = &exc, ev.Timestamp
		}
		if exc, ok := AnyException(ev); ok && len(s.Exceptions) < MaxSummaryExceptions {
			s.Exceptions = append(s.Exceptions, exc)
		}
	case EventFinish:
		s.FinishTime = ev.Timestamp
		s.Status, s.HasStatus = FinishStatus(ev)
	case EventClean:
		s.CleanTime = ev.Timestamp
	}
}

// dependency folds a dependency-add or dependency-remove event in: flux-core
// keeps one entry per description (an equal description added twice is
// one, removed once).
func (s *Summary) dependency(ev Event) {
	desc, _ := ev.Context["description"].(string)
	i := slices.Index(s.Dependencies, desc)
	if ev.Name == EventDependencyAdd {
		s.DependencyTime = ev.Timestamp
		if i >= 0 {
			return
		}
		s.Pending++
		if len(s.Dependencies) < MaxSummaryDependencies {
			s.Dependencies = append(s.Dependencies, desc)
		}
		return
	}
	if i >= 0 {
		s.Dependencies = slices.Delete(s.Dependencies, i, i+1)
	}
	if i >= 0 || s.Pending > len(s.Dependencies) {
		s.Pending--
	}
}

// Allocated reports whether resources were assigned to the job (it can no
// longer be held by urgency 0): alloc, or anything after it.
func (s Summary) Allocated() bool {
	return s.AllocTime != 0 || s.StartTime != 0 || s.FinishTime != 0 || s.CleanTime != 0
}

// Started reports whether the job shell started.
func (s Summary) Started() bool { return s.StartTime != 0 }

// Ended reports whether the eventlog has the job's end: finish or clean.
func (s Summary) Ended() bool { return s.FinishTime != 0 || s.CleanTime != 0 }

// Clean reports whether the job is inactive (its "clean" event): every
// other eventlog of it, the output's included, is complete.
func (s Summary) Clean() bool { return s.CleanTime != 0 }

// FinishStatus returns the wait status of a "finish" event, and false when
// the event is not one or carries no readable status.
func FinishStatus(ev Event) (WaitStatus, bool) {
	if ev.Name != EventFinish {
		return 0, false
	}
	st, ok := ContextInt(ev.Context, "status")
	return WaitStatus(st), ok
}

// FatalException returns the context of an "exception" event of severity 0
// (fatal: the job ends), and false for any other event.
func FatalException(ev Event) (ExceptionContext, bool) {
	if ev.Name != EventException {
		return ExceptionContext{}, false
	}
	sev, ok := ContextInt(ev.Context, "severity")
	if !ok || sev != 0 {
		return ExceptionContext{}, false
	}
	typ, _ := ev.Context["type"].(string)
	note, _ := ev.Context["note"].(string)
	return ExceptionContext{Type: typ, Severity: sev, Note: note}, true
}

// AnyException returns the context of an "exception" event of any
// severity, and false for any other event or one without a severity.
func AnyException(ev Event) (ExceptionContext, bool) {
	if ev.Name != EventException {
		return ExceptionContext{}, false
	}
	sev, ok := ContextInt(ev.Context, "severity")
	if !ok {
		return ExceptionContext{}, false
	}
	typ, _ := ev.Context["type"].(string)
	note, _ := ev.Context["note"].(string)
	return ExceptionContext{Type: typ, Severity: sev, Note: note}, true
}

// ContextInt reads an integer from a decoded event context: a JSON number
// (float64 or json.Number), an int, or a decimal string.
func ContextInt(m map[string]any, key string) (int, bool) {
	switch v := m[key].(type) {
	case float64:
		return int(v), true
	case int:
		return v, true
	case int64:
		return int(v), true
	case json.Number:
		n, err := v.Int64()
		return int(n), err == nil
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil
	}
	return 0, false
}
