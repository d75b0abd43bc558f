package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Event is one entry of a job eventlog (RFC 18): a timestamp in seconds
// since the epoch, a name and an optional context object. Context values
// are as encoding/json decodes them (numbers are float64).
type Event struct {
	Timestamp float64        `json:"timestamp"`
	Name      string         `json:"name"`
	Context   map[string]any `json:"context,omitempty"`
}

// ErrInvalidEvent is matched (errors.Is) by the errors of ParseEvent,
// ParseEventlog and the typed context accessors.
var ErrInvalidEvent = errors.New("invalid eventlog entry")

func eventErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// ParseEvent decodes one eventlog line, with or without its trailing
// newline. As flux-core's eventlog_entry_decode
// (src/common/libeventlog/eventlog.c) it requires a JSON object with a
// string "name" and a number "timestamp"; "context", if present, must be
// an object. An empty name or a negative or non-finite timestamp is also
// refused.
//
// A context of more than MaxContextBytes is clipped (see clip.go): its
// small members are kept, long strings cut, and ClippedKey added.
func ParseEvent(line []byte) (Event, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(line) > clipLine {
		return parseClipped(line)
	}
	if ev, ok := scanEvent(line); ok {
		return ev, nil
	}
	if ev, ok := parseEventFast(line); ok {
		return ev, nil
	}
	return parseEventChecked(line)
}

// parseEventFast decodes a well-formed entry in one pass. It reports false
// for anything unusual (a decoding error, a missing or null field, a
// timestamp out of range), which parseEventChecked then decodes and
// explains.
func parseEventFast(line []byte) (Event, bool) {
	var f struct {
		Timestamp *float64        `json:"timestamp"`
		Name      *string         `json:"name"`
		Context   json.RawMessage `json:"context"`
	}
	if json.Unmarshal(line, &f) != nil || f.Name == nil || *f.Name == "" || f.Timestamp == nil {
		return Event{}, false
	}
	if ts := *f.Timestamp; ts < 0 || math.IsInf(ts, 0) {
		return Event{}, false
	}
	ev := Event{Timestamp: *f.Timestamp, Name: *f.Name}
	if f.Context != nil {
		// a raw context keeps the last of duplicate keys, as
		// parseEventChecked does; null or a non-object is refused there
		if f.Context[0] != '{' || json.Unmarshal(f.Context, &ev.Context) != nil {
			return Event{}, false
		}
	}
	return ev, true
}

// parseEventChecked is ParseEvent field by field, with an error saying
// what is wrong.
func parseEventChecked(line []byte) (Event, error) {
	var raw struct {
		Timestamp json.RawMessage `json:"timestamp"`
		Name      json.RawMessage `json:"name"`
		Context   json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if bytes.Equal(bytes.TrimSpace(line), []byte("null")) {
		return Event{}, eventErr("not an object")
	}
	var ev Event
	if raw.Name == nil || json.Unmarshal(raw.Name, &ev.Name) != nil || raw.Name[0] != '"' {
		return Event{}, eventErr(`"name" missing or not a string`)
	}
	if ev.Name == "" {
		return Event{}, eventErr(`"name" is empty`)
	}
	if raw.Timestamp == nil || json.Unmarshal(raw.Timestamp, &ev.Timestamp) != nil {
		return Event{}, eventErr(`%q: "timestamp" missing or not a number`, ev.Name)
	}
	if ev.Timestamp < 0 || math.IsInf(ev.Timestamp, 0) {
		return Event{}, eventErr("%q: timestamp %v out of range", ev.Name, ev.Timestamp)
	}
	if raw.Context != nil && !bytes.Equal(raw.Context, []byte("null")) {
		if raw.Context[0] != '{' {
			return Event{}, eventErr(`%q: "context" is not an object`, ev.Name)
		}
		if err := json.Unmarshal(raw.Context, &ev.Context); err != nil {
			return Event{}, fmt.Errorf("%w: %q: context: %w", ErrInvalidEvent, ev.Name, err)
		}
	} else if raw.Context != nil {
		return Event{}, eventErr(`%q: "context" is not an object`, ev.Name)
	}
	return ev, nil
}

// ParseEventlog decodes a whole eventlog: newline-terminated entries, as
// job-info.lookup returns a job's "eventlog" key. Empty lines are refused,
// except that the log may be empty.
func ParseEventlog(data []byte) ([]Event, error) {
	var out []Event
	for n := 1; len(data) > 0; n++ {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		data = rest
		ev, err := ParseEvent(line)
		if err != nil {
			return out, fmt.Errorf("eventlog line %d: %w", n, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// decodeContext re-decodes ev.Context into v after checking the name.
func (ev Event) decodeContext(name string, v any) error {
	if ev.Name != name {
		return eventErr("event is %q, not %q", ev.Name, name)
	}
	b, err := json.Marshal(ev.Context)
	if err != nil {
		return fmt.Errorf("%w: %q context: %w", ErrInvalidEvent, name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %q context: %w", ErrInvalidEvent, name, err)
	}
	return nil
}

func requireKeys(ev Event, keys ...string) error {
	for _, k := range keys {
		if _, ok := ev.Context[k]; !ok {
			return eventErr("%q context has no %q", ev.Name, k)
		}
	}
	return nil
}

// SubmitContext is the context of a "submit" event
// (flux-core src/modules/job-manager/submit.c).
type SubmitContext struct {
	UserID  uint32 `json:"userid"`
	Urgency int    `json:"urgency"`
	Flags   int    `json:"flags"`
	Version int    `json:"version"`
}

// Submit decodes the context of a "submit" event.
func (ev Event) Submit() (SubmitContext, error) {
	var c SubmitContext
	if err := ev.decodeContext("submit", &c); err != nil {
		return c, err
	}
	return c, requireKeys(ev, "userid", "urgency", "flags")
}

// AllocContext is the context of an "alloc" event: scheduler annotations,
// e.g. {"sched": {"resource_summary": "rank0/core0"}}.
type AllocContext struct {
	Annotations map[string]any `json:"annotations,omitempty"`
}

// Alloc decodes the context of an "alloc" event (it may have none).
func (ev Event) Alloc() (AllocContext, error) {
	var c AllocContext
	return c, ev.decodeContext("alloc", &c)
}

// StartContext is the context of a "start" event. flux-core 0.88 posts it
// without a context; the type exists so every lifecycle event has one.
type StartContext struct{}

// Start checks that ev is a "start" event.
func (ev Event) Start() (StartContext, error) {
	var c StartContext
	return c, ev.decodeContext("start", &c)
}

// FinishContext is the context of a "finish" event: the job's wait status
// (the largest of its tasks' statuses).
type FinishContext struct {
	Status WaitStatus `json:"status"`
}

// Finish decodes the context of a "finish" event.
func (ev Event) Finish() (FinishContext, error) {
	var c FinishContext
	if err := ev.decodeContext("finish", &c); err != nil {
		return c, err
	}
	return c, requireKeys(ev, "status")
}

// ExceptionContext is the context of an "exception" event
// (flux-core src/modules/job-manager/raise.c). Severity 0 is fatal.
type ExceptionContext struct {
	Type     string  `json:"type"`
	Severity int     `json:"severity"`
	Note     string  `json:"note"`
	UserID   *uint32 `json:"userid,omitempty"`
}

// Exception decodes the context of an "exception" event.
func (ev Event) Exception() (ExceptionContext, error) {
	var c ExceptionContext
	if err := ev.decodeContext("exception", &c); err != nil {
		return c, err
	}
	return c, requireKeys(ev, "type", "severity")
}

// UrgencyContext is the context of an "urgency" event.
type UrgencyContext struct {
	UserID  uint32 `json:"userid"`
	Urgency int    `json:"urgency"`
}

// Urgency decodes the context of an "urgency" event.
func (ev Event) Urgency() (UrgencyContext, error) {
	var c UrgencyContext
	if err := ev.decodeContext("urgency", &c); err != nil {
		return c, err
	}
	return c, requireKeys(ev, "urgency")
}

// PriorityContext is the context of a "priority" event.
type PriorityContext struct {
	Priority int64 `json:"priority"`
}

// Priority decodes the context of a "priority" event.
func (ev Event) Priority() (PriorityContext, error) {
	var c PriorityContext
	if err := ev.decodeContext("priority", &c); err != nil {
		return c, err
	}
	return c, requireKeys(ev, "priority")
}

// WaitStatus is a POSIX wait status, as in a "finish" event's context and
// job-list's "waitstatus" attribute: 256 is exit code 1, 36608 (0x8f00) is
// exit code 143, 9 is killed by SIGKILL.
type WaitStatus int

// Exited reports whether the process exited normally (WIFEXITED).
func (s WaitStatus) Exited() bool { return s&0x7f == 0 }

// ExitCode returns the exit code (WEXITSTATUS); meaningful if Exited.
func (s WaitStatus) ExitCode() int { return int(s>>8) & 0xff }

// Signaled reports whether the process was killed by a signal (WIFSIGNALED).
func (s WaitStatus) Signaled() bool { sig := s & 0x7f; return sig != 0 && sig != 0x7f }

// Signal returns the number of the killing signal (WTERMSIG); meaningful
// if Signaled.
func (s WaitStatus) Signal() int { return int(s & 0x7f) }

// CoreDumped reports whether the killed process dumped core (WCOREDUMP).
func (s WaitStatus) CoreDumped() bool { return s.Signaled() && s&0x80 != 0 }

// Result is the exit code if the process exited, minus the signal number
// if it was killed by one (Python's os.waitstatus_to_exitcode, which
// flux-core's FluxExecutorFuture.result uses), and 0 otherwise.
func (s WaitStatus) Result() int {
	switch {
	case s.Exited():
		return s.ExitCode()
	case s.Signaled():
		return -s.Signal()
	}
	return 0
}

// String describes the status: "exited 1", "signaled 9 (core dumped)".
func (s WaitStatus) String() string {
	switch {
	case s.Exited():
		return "exited " + strconv.Itoa(s.ExitCode())
	case s.CoreDumped():
		return "signaled " + strconv.Itoa(s.Signal()) + " (core dumped)"
	case s.Signaled():
		return "signaled " + strconv.Itoa(s.Signal())
	}
	return "wait status " + strconv.Itoa(int(s))
}
