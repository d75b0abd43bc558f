package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// State is a job state bit (flux-core src/common/libjob/job.h
// flux_job_state_t). Masks of them select jobs in a "states" constraint.
type State int

// Job states.
const (
	StateNew      State = 1
	StateDepend   State = 2
	StatePriority State = 4
	StateSched    State = 8
	StateRun      State = 16
	StateCleanup  State = 32
	StateInactive State = 64

	StatePending = StateDepend | StatePriority | StateSched
	StateRunning = StateRun | StateCleanup
	StateActive  = StatePending | StateRunning
	// StateAll is what `flux jobs -a` asks for (126).
	StateAll = StateActive | StateInactive
)

var stateNames = []struct {
	s    State
	name string
}{
	{StateNew, "NEW"}, {StateDepend, "DEPEND"}, {StatePriority, "PRIORITY"}, {StateSched, "SCHED"},
	{StateRun, "RUN"}, {StateCleanup, "CLEANUP"}, {StateInactive, "INACTIVE"},
}

// String names a single state ("RUN"), or the states of a mask joined by
// "|".
func (s State) String() string {
	var parts []string
	for _, n := range stateNames {
		if s&n.s != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "State(" + strconv.Itoa(int(s)) + ")"
	}
	return strings.Join(parts, "|")
}

// Result is an inactive job's result bit (flux_job_result_t).
type Result int

// Job results.
const (
	ResultCompleted Result = 1
	ResultFailed    Result = 2
	ResultCanceled  Result = 4
	ResultTimeout   Result = 8
)

// String names the result as `flux jobs` does.
func (r Result) String() string {
	switch r {
	case ResultCompleted:
		return "COMPLETED"
	case ResultFailed:
		return "FAILED"
	case ResultCanceled:
		return "CANCELED"
	case ResultTimeout:
		return "TIMEOUT"
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// JobInfo is one job as job-list reports it. Only the attributes asked
// for are filled; All holds every attribute received, decoded generically.
type JobInfo struct {
	ID                ID             `json:"id"`
	UserID            uint32         `json:"userid"`
	Urgency           int            `json:"urgency"`
	Priority          int64          `json:"priority"`
	State             State          `json:"state"`
	Result            Result         `json:"result"`
	Name              string         `json:"name"`
	Cwd               string         `json:"cwd"`
	Queue             string         `json:"queue"`
	Ntasks            int            `json:"ntasks"`
	Ncores            int            `json:"ncores"`
	Nnodes            int            `json:"nnodes"`
	Nodelist          string         `json:"nodelist"`
	Duration          float64        `json:"duration"`
	Expiration        float64        `json:"expiration"`
	TSubmit           float64        `json:"t_submit"`
	TDepend           float64        `json:"t_depend"`
	TRun              float64        `json:"t_run"`
	TCleanup          float64        `json:"t_cleanup"`
	TInactive         float64        `json:"t_inactive"`
	Success           bool           `json:"success"`
	ExceptionOccurred bool           `json:"exception_occurred"`
	ExceptionType     string         `json:"exception_type"`
	ExceptionSeverity int            `json:"exception_severity"`
	ExceptionNote     string         `json:"exception_note"`
	WaitStatus        *WaitStatus    `json:"waitstatus,omitempty"`
	Annotations       map[string]any `json:"annotations,omitempty"`
	Dependencies      []string       `json:"dependencies,omitempty"`
	All               map[string]any `json:"-"`
}

// UnmarshalJSON decodes the known attributes and keeps all of them in All.
func (j *JobInfo) UnmarshalJSON(b []byte) error {
	type plain JobInfo
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &p.All); err != nil {
		return err
	}
	*j = JobInfo(p)
	return nil
}

// Constraint is an RFC 31 constraint object for job-list. flux-core
// v0.88.0 src/modules/job-list/match.c supports these operators: "and",
// "or", "not" (of constraints); "userid" (uids; -1 any), "name" (job
// names, exact match), "queue", "states" and "results" (names such as
// "run" or "inactive", or integer masks), "hostlist", "ranks", and the
// time comparisons "t_submit", "t_depend", "t_priority", "t_sched",
// "t_run", "t_cleanup", "t_inactive" (strings like ">=1700000000.0").
// Anything else is refused with EPROTO ("constraint object invalid").
type Constraint map[string][]any

// And requires all of cs.
func And(cs ...Constraint) Constraint { return Constraint{"and": constraintArgs(cs)} }

// Or requires one of cs.
func Or(cs ...Constraint) Constraint { return Constraint{"or": constraintArgs(cs)} }

// Not requires that c does not match.
func Not(c Constraint) Constraint { return Constraint{"not": []any{c}} }

func constraintArgs(cs []Constraint) []any {
	out := make([]any, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out
}

// UserID matches jobs of any of uids.
func UserID(uids ...uint32) Constraint { return Constraint{"userid": anys(uids)} }

// Name matches jobs whose name (attributes.system.job.name, or the
// command's base name) is one of names.
func Name(names ...string) Constraint { return Constraint{"name": anys(names)} }

// Queue matches jobs in any of queues.
func Queue(queues ...string) Constraint { return Constraint{"queue": anys(queues)} }

// States matches jobs in any state of mask.
func States(mask State) Constraint { return Constraint{"states": []any{int(mask)}} }

// Results matches inactive jobs with any result of mask.
func Results(mask Result) Constraint { return Constraint{"results": []any{int(mask)}} }

func anys[T any](vs []T) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

// jsonFloat is a float64 written with a decimal point, as Python's json
// writes floats ("since": 0.0 in ../shared/flux-wire/list.decoded.txt).
type jsonFloat float64

// MarshalJSON writes f with a decimal point.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("job: %v is not a JSON number", v)
	}
	format := byte('f') // as Python's repr: positional below 1e16
	if math.Abs(v) >= 1e16 {
		format = 'g'
	}
	b := strconv.AppendFloat(nil, v, format, -1, 64)
	if !strings.ContainsAny(string(b), ".eE") {
		b = append(b, '.', '0')
	}
	return b, nil
}

// ListOptions are the arguments of List.
type ListOptions struct {
	// MaxEntries limits the number of jobs; 0 means no limit.
	MaxEntries int
	// Attrs are the attributes to return ("all" for all); the ID is
	// always returned. Empty means "all".
	Attrs []string
	// Since returns only jobs that became inactive after this time
	// (seconds since the epoch); 0 means no limit.
	Since float64
	// Constraint selects jobs; nil means every job the caller may see.
	Constraint Constraint
}

// List asks job-list for jobs (job-list.list, streaming as `flux jobs`
// does: one job per response, then ENODATA). Jobs come newest first,
// active before inactive.
func List(ctx context.Context, c *flux.Conn, opts ListOptions) ([]JobInfo, error) {
	if opts.MaxEntries < 0 {
		return nil, fmt.Errorf("job: list: max entries %d < 0: %w", opts.MaxEntries, syscall.EINVAL)
	}
	if opts.Since < 0 {
		return nil, fmt.Errorf("job: list: since %v < 0: %w", opts.Since, syscall.EINVAL)
	}
	attrs := opts.Attrs
	if len(attrs) == 0 {
		attrs = []string{"all"}
	}
	req := struct {
		MaxEntries int        `json:"max_entries"`
		Attrs      []string   `json:"attrs"`
		Since      jsonFloat  `json:"since"`
		Constraint Constraint `json:"constraint,omitempty"`
	}{opts.MaxEntries, attrs, jsonFloat(opts.Since), opts.Constraint}
	s, err := c.Stream(ctx, topicList, req)
	if err != nil {
		return nil, fmt.Errorf("job: list: %w", err)
	}
	defer s.Close()
	var jobs []JobInfo
	for {
		var resp struct {
			Jobs []JobInfo `json:"jobs"`
		}
		err := s.Recv(&resp)
		if errors.Is(err, io.EOF) {
			return jobs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("job: list: %w", err)
		}
		jobs = append(jobs, resp.Jobs...)
	}
}

// ListID asks job-list for one job (job-list.list-id). attrs empty means
// "all". An unknown job is an error matching syscall.ENOENT.
func ListID(ctx context.Context, c *flux.Conn, id ID, attrs ...string) (JobInfo, error) {
	if len(attrs) == 0 {
		attrs = []string{"all"}
	}
	req := struct {
		ID    ID       `json:"id"`
		Attrs []string `json:"attrs"`
	}{id, attrs}
	var resp struct {
		Job *JobInfo `json:"job"`
	}
	if err := c.RPC(ctx, topicListID, req, &resp); err != nil {
		return JobInfo{}, fmt.Errorf("job %s: list-id: %w", id, err)
	}
	if resp.Job == nil {
		return JobInfo{}, fmt.Errorf("job %s: list-id: response has no job: %w", id, syscall.EPROTO)
	}
	return *resp.Job, nil
}
