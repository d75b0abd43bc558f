package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Jobspec is a version 1 jobspec (flux-core RFC 14 and RFC 25), the
// document job-ingest.submit takes. Field order follows what flux-core's
// Python JobspecV1 emits. Keys of attributes.system this type does not
// name survive a Parse/Marshal round trip in SystemAttributes.Extra.
type Jobspec struct {
	Resources  []Resource `json:"resources"`
	Tasks      []Task     `json:"tasks"`
	Attributes Attributes `json:"attributes"`
	Version    int        `json:"version"`
}

// Resource is a node of the resource request tree. V1 counts are plain
// integers.
type Resource struct {
	Type      string     `json:"type"`
	Count     int        `json:"count"`
	Exclusive bool       `json:"exclusive,omitempty"`
	With      []Resource `json:"with,omitempty"`
	Label     string     `json:"label,omitempty"`
	ID        string     `json:"id,omitempty"`
	Unit      string     `json:"unit,omitempty"`
}

// Task is a command to run in the slots labelled Slot.
type Task struct {
	Command    []string       `json:"command"`
	Slot       string         `json:"slot"`
	Count      TaskCount      `json:"count"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// TaskCount sets how many tasks run: PerSlot tasks in each slot, or Total
// tasks overall. Exactly one is set (non-zero).
type TaskCount struct {
	PerSlot int `json:"per_slot,omitempty"`
	Total   int `json:"total,omitempty"`
}

// Attributes are the jobspec's system and user attributes.
type Attributes struct {
	System SystemAttributes `json:"system"`
	User   map[string]any   `json:"user,omitempty"`
}

// SystemAttributes are the attributes.system keys flux-core interprets.
type SystemAttributes struct {
	// Duration is the time limit in seconds; 0 means none.
	Duration float64 `json:"duration"`
	// Environment is the job's whole environment.
	Environment map[string]string `json:"environment,omitempty"`
	// Cwd is the working directory of the tasks.
	Cwd string `json:"cwd,omitempty"`
	// Shell holds the job shell's settings, e.g. {"options": {"rlimit": {...}}}.
	Shell map[string]any `json:"shell,omitempty"`
	// Job holds job metadata, e.g. {"name": "sleep"} (flux jobs' NAME).
	Job map[string]any `json:"job,omitempty"`
	// Queue is the target queue.
	Queue string `json:"queue,omitempty"`
	// Bank is the accounting bank.
	Bank string `json:"bank,omitempty"`
	// Dependencies are RFC 26 dependencies ({"scheme": ..., "value": ...}).
	Dependencies []Dependency `json:"dependencies,omitempty"`
	// Constraints is an RFC 31 constraint object.
	Constraints map[string]any `json:"constraints,omitempty"`
	// Extra holds the other attributes.system keys, kept as they came.
	Extra map[string]any `json:"-"`
}

// Dependency is an RFC 26 job dependency.
type Dependency struct {
	Scheme string `json:"scheme"`
	Value  string `json:"value"`
}

var systemKeys = []string{"duration", "environment", "cwd", "shell", "job", "queue", "bank", "dependencies", "constraints"}

// MarshalJSON encodes the named keys that are set, in order (an empty but
// non-nil Environment is written as {}, as flux-core writes it), then the
// Extra keys, sorted; a key in Extra that a field names is dropped.
func (s SystemAttributes) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	add := func(k string, v any) error {
		vb, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("attributes.system.%s: %w", k, err)
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		kb, _ := json.Marshal(k)
		b = append(append(append(b, kb...), ':'), vb...)
		return nil
	}
	type field struct {
		key string
		set bool
		val any
	}
	for _, f := range []field{
		{"duration", true, s.Duration},
		{"environment", s.Environment != nil, s.Environment},
		{"cwd", s.Cwd != "", s.Cwd},
		{"shell", s.Shell != nil, s.Shell},
		{"job", s.Job != nil, s.Job},
		{"queue", s.Queue != "", s.Queue},
		{"bank", s.Bank != "", s.Bank},
		{"dependencies", s.Dependencies != nil, s.Dependencies},
		{"constraints", s.Constraints != nil, s.Constraints},
	} {
		if f.set {
			if err := add(f.key, f.val); err != nil {
				return nil, err
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Extra)) {
		if !slices.Contains(systemKeys, k) {
			if err := add(k, s.Extra[k]); err != nil {
				return nil, err
			}
		}
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes the named keys and keeps the rest in Extra.
func (s *SystemAttributes) UnmarshalJSON(b []byte) error {
	type plain SystemAttributes
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for _, k := range systemKeys {
		delete(all, k)
	}
	p.Extra = nil
	if len(all) > 0 {
		p.Extra = all
	}
	*s = SystemAttributes(p)
	return nil
}

// CommandOptions are the arguments of FromCommand, after flux-core's
// JobspecV1.from_command (src/bindings/python/flux/job/Jobspec.py). Zero
// values mean the Python defaults.
type CommandOptions struct {
	NumTasks     int // tasks to run; 0 means 1
	CoresPerTask int // cores per task; 0 means 1
	GPUsPerTask  int // GPUs per task; 0 means none
	NumNodes     int // spread the tasks over this many nodes; 0 means unset
	Exclusive    bool
	// Duration is the time limit; 0 means none. It is written in seconds.
	Duration time.Duration
	Cwd      string
	// Environment is the job's whole environment. Unlike Python, which
	// copies the submitting process's environment when none is given, nil
	// gives an empty environment: an operator's own environment is no
	// business of the jobs it submits.
	Environment map[string]string
	// UserAttributes become attributes.user.
	UserAttributes map[string]any
	// Name sets attributes.system.job.name.
	Name string
	// Queue sets attributes.system.queue.
	Queue string
	// Rlimits sets the shell option "rlimit" (limit name to value, -1 for
	// unlimited), as `flux run` propagates them.
	Rlimits map[string]int64
	// ShellOptions are merged into attributes.system.shell.options.
	ShellOptions map[string]any
}

// ErrInvalidJobspec is matched (errors.Is) by every error of FromCommand,
// Parse and Validate that is about the jobspec's content.
var ErrInvalidJobspec = errors.New("invalid jobspec")

// JobspecError says what is wrong with a jobspec, in the words of
// flux-core's validator where it has them ("Missing key (tasks)").
type JobspecError struct {
	Message string
}

// Error returns "invalid jobspec: MESSAGE".
func (e *JobspecError) Error() string { return "invalid jobspec: " + e.Message }

// Is reports whether target is ErrInvalidJobspec.
func (e *JobspecError) Is(target error) bool { return target == ErrInvalidJobspec }

func specErr(format string, args ...any) error {
	return &JobspecError{Message: fmt.Sprintf(format, args...)}
}

// FromCommand builds the minimal V1 jobspec that runs cmd, as flux-core's
// JobspecV1.from_command does: a slot labelled "task" holding
// CoresPerTask cores (and GPUsPerTask GPUs); without NumNodes, NumTasks
// such slots and one task per slot; with NumNodes, a node resource of
// NumNodes nodes holding ceil(NumTasks/NumNodes) slots each, and tasks
// counted per slot if they divide evenly, else as a total.
func FromCommand(cmd []string, opts CommandOptions) (*Jobspec, error) {
	if len(cmd) == 0 {
		return nil, specErr("command array cannot have length of zero")
	}
	ntasks, cores := opts.NumTasks, opts.CoresPerTask
	if ntasks == 0 {
		ntasks = 1
	}
	if cores == 0 {
		cores = 1
	}
	switch {
	case ntasks < 1:
		return nil, specErr("task count must be a integer >= 1")
	case cores < 1:
		return nil, specErr("cores per task must be an integer >= 1")
	case opts.GPUsPerTask < 0:
		return nil, specErr("gpus per task must be an integer >= 0")
	case opts.NumNodes < 0:
		return nil, specErr("node count must be an integer >= 1 (if set)")
	case opts.NumNodes > ntasks:
		return nil, specErr("node count must not be greater than task count")
	case opts.NumNodes == 0 && opts.Exclusive:
		return nil, specErr("exclusive can only be set with a node count")
	case opts.Duration < 0:
		return nil, specErr("duration must not be negative")
	}
	children := []Resource{{Type: "core", Count: cores}}
	if opts.GPUsPerTask > 0 {
		children = append(children, Resource{Type: "gpu", Count: opts.GPUsPerTask})
	}
	count := TaskCount{PerSlot: 1}
	var top Resource
	if opts.NumNodes > 0 {
		nslots := (ntasks + opts.NumNodes - 1) / opts.NumNodes
		if ntasks%opts.NumNodes != 0 {
			count = TaskCount{Total: ntasks} // uneven: some slots stay empty
		}
		slot := Resource{Type: "slot", Count: nslots, With: children, Label: "task"}
		top = Resource{Type: "node", Count: opts.NumNodes, Exclusive: opts.Exclusive, With: []Resource{slot}}
	} else {
		top = Resource{Type: "slot", Count: ntasks, With: children, Label: "task"}
	}
	js := &Jobspec{
		Resources: []Resource{top},
		Tasks:     []Task{{Command: slices.Clone(cmd), Slot: "task", Count: count}},
		Version:   1,
	}
	sys := &js.Attributes.System
	sys.Duration = opts.Duration.Seconds()
	sys.Environment = map[string]string{}
	maps.Copy(sys.Environment, opts.Environment)
	sys.Cwd = opts.Cwd
	sys.Queue = opts.Queue
	if opts.Rlimits != nil {
		rl := make(map[string]any, len(opts.Rlimits))
		for k, v := range opts.Rlimits {
			rl[k] = v
		}
		js.SetShellOption("rlimit", rl)
	}
	for k, v := range opts.ShellOptions {
		js.SetShellOption(k, v)
	}
	if opts.Name != "" {
		js.SetJobName(opts.Name)
	}
	if len(opts.UserAttributes) > 0 {
		js.Attributes.User = maps.Clone(opts.UserAttributes)
	}
	if err := js.CheckRunnable(); err != nil {
		return nil, err
	}
	return js, nil
}

// SetJobName sets attributes.system.job.name, the NAME `flux jobs` shows.
func (js *Jobspec) SetJobName(name string) {
	if js.Attributes.System.Job == nil {
		js.Attributes.System.Job = map[string]any{}
	}
	js.Attributes.System.Job["name"] = name
}

// JobName returns attributes.system.job.name, or "" if unset.
func (js *Jobspec) JobName() string {
	s, _ := js.Attributes.System.Job["name"].(string)
	return s
}

// SetShellOption sets attributes.system.shell.options.<key>.
func (js *Jobspec) SetShellOption(key string, value any) {
	sys := &js.Attributes.System
	if sys.Shell == nil {
		sys.Shell = map[string]any{}
	}
	opts, ok := sys.Shell["options"].(map[string]any)
	if !ok {
		opts = map[string]any{}
		sys.Shell["options"] = opts
	}
	opts[key] = value
}

// MarshalJSON encodes the jobspec, writing nil Resources or Tasks as []
// (the broker refuses null: "resources must be a sequence").
func (js Jobspec) MarshalJSON() ([]byte, error) {
	type plain Jobspec
	p := plain(js)
	if p.Resources == nil {
		p.Resources = []Resource{}
	}
	if p.Tasks == nil {
		p.Tasks = []Task{}
	}
	return json.Marshal(p)
}

// Marshal returns the jobspec as JSON.
func (js *Jobspec) Marshal() ([]byte, error) { return json.Marshal(js) }

// YAML returns the jobspec as YAML.
func (js *Jobspec) YAML() ([]byte, error) { return yaml.Marshal(js) }

// Parse decodes a V1 jobspec from JSON or YAML and validates it as the
// broker does (see Validate; CheckRunnable checks more). Its
// errors for a document that is well-formed but not a valid V1 jobspec
// match ErrInvalidJobspec and use the messages of flux-core's validator
// (src/bindings/python/flux/job/Jobspec.py, the job-ingest "jobspec"
// validator plugin): "Missing key (tasks)" is what the broker answered to
// `{"version": 1}` in ../shared/flux-wire/submit-invalid.decoded.txt.
// With several keys missing, flux-core names whichever one a Python set
// yields first, which varies between broker processes (Jobspec.py checks
// a set of required keys; seen in test/realflux), so callers must not
// depend on which missing key a message names.
func Parse(data []byte) (*Jobspec, error) {
	j := data
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		var err error
		if j, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("jobspec: not JSON or YAML: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("jobspec: invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("jobspec: invalid JSON: data after the top-level value")
	}
	if err := checkDocument(doc); err != nil {
		return nil, err
	}
	var js Jobspec
	if err := json.Unmarshal(j, &js); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidJobspec, err)
	}
	if err := js.Validate(); err != nil {
		return nil, err
	}
	return &js, nil
}

// Validate checks the jobspec as the broker's default validator does
// (the job-ingest "jobspec" plugin, i.e. constructing a Python JobspecV1:
// src/bindings/python/flux/job/Jobspec.py), so that it refuses what the
// broker would refuse and nothing else. The first problem found is
// returned, as a *JobspecError. CheckRunnable finds more problems, which
// the broker accepts at submission but which make the job fail later.
func (js *Jobspec) Validate() error {
	if js.Version != 1 {
		return specErr("version must be 1")
	}
	var walk func(rs []Resource) error
	walk = func(rs []Resource) error {
		for _, r := range rs {
			if err := validateResource(r); err != nil {
				return err
			}
			if err := walk(r.With); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(js.Resources); err != nil {
		return err
	}
	for _, t := range js.Tasks {
		switch {
		case len(t.Command) == 0:
			return specErr("command array cannot have length of zero")
		case t.Count.PerSlot < 0:
			return specErr("count per_slot must be > 0")
		case t.Count.Total < 0:
			return specErr("count total must be > 0")
		case t.Count.PerSlot == 0 && t.Count.Total == 0:
			return specErr("count per_slot or total must be set")
		case t.Count.PerSlot != 0 && t.Count.Total != 0:
			return specErr("count must have exactly one key set")
		}
	}
	sys := js.Attributes.System
	if math.IsNaN(sys.Duration) || math.IsInf(sys.Duration, 0) {
		return specErr("attributes.system.duration must be a number")
	}
	if sys.Constraints != nil {
		if err := checkConstraint(sys.Constraints); err != nil {
			return err
		}
	}
	return nil
}

// CheckRunnable runs Validate, then checks what the broker's validator
// lets through but the job then fails on (the scheduler or the job shell
// refuses it): there must be resources and tasks, each task's slot must
// name a slot label in the resources, and the duration must not be
// negative. FromCommand's jobspecs pass it.
func (js *Jobspec) CheckRunnable() error {
	if err := js.Validate(); err != nil {
		return err
	}
	if len(js.Resources) == 0 {
		return specErr("resources must contain at least one resource")
	}
	if len(js.Tasks) == 0 {
		return specErr("tasks must contain at least one task")
	}
	labels := map[string]bool{}
	var walk func(rs []Resource)
	walk = func(rs []Resource) {
		for _, r := range rs {
			if r.Type == "slot" {
				labels[r.Label] = true
			}
			walk(r.With)
		}
	}
	walk(js.Resources)
	for _, t := range js.Tasks {
		if !labels[t.Slot] {
			return specErr("task slot %q names no slot label in resources", t.Slot)
		}
	}
	if js.Attributes.System.Duration < 0 {
		return specErr("duration must not be negative")
	}
	return nil
}

func validateResource(r Resource) error {
	switch {
	case r.Type == "":
		return specErr("type is a required key for resources")
	case (r.Type == "node" || r.Type == "slot" || r.Type == "core") && r.Count < 1:
		return specErr("node, slot, or core count must be > 0")
	case r.Count < 0:
		return specErr("count must be >= 0")
	case r.Type == "slot" && r.Label == "":
		return specErr("slots must have labels")
	}
	return nil
}

// checkDocument checks the generic shape of a decoded jobspec, with the
// messages flux-core's Python validator gives, before it is decoded into
// a Jobspec (whose types could not hold what is wrong).
func checkDocument(doc any) error {
	top, ok := doc.(map[string]any)
	if !ok {
		return specErr("jobspec must be a mapping")
	}
	// Python reports the first missing key in set order, which varies
	// between processes; "tasks" first reproduces the broker's answer to
	// {"version": 1} in ../shared/flux-wire/submit-invalid.decoded.txt.
	if err := checkKeys(top, []string{"tasks", "resources", "attributes", "version"}, false, false); err != nil {
		return err
	}
	resources, ok := top["resources"].([]any)
	if !ok {
		return specErr("resources must be a sequence")
	}
	tasks, ok := top["tasks"].([]any)
	if !ok {
		return specErr("tasks must be a sequence")
	}
	attrs, ok := top["attributes"].(map[string]any)
	if !ok {
		return specErr("attributes must be a mapping")
	}
	if v, ok := intOf(top["version"]); !ok {
		return specErr("version must be an integer")
	} else if v != 1 {
		return specErr("version must be 1")
	}
	if err := checkResources(resources); err != nil {
		return err
	}
	for _, t := range tasks {
		if err := checkTask(t); err != nil {
			return err
		}
	}
	if err := checkKeys(attrs, []string{"system", "user"}, true, false); err != nil {
		return err
	}
	sys, ok := attrs["system"]
	if !ok {
		return specErr("attributes.system is a required key")
	}
	system, ok := sys.(map[string]any)
	if !ok {
		return specErr("attributes.system must be a mapping")
	}
	d, ok := system["duration"]
	if !ok {
		return specErr("attributes.system.duration is a required key")
	}
	if _, ok := d.(json.Number); !ok {
		return specErr("attributes.system.duration must be a number")
	}
	if u, ok := attrs["user"]; ok {
		if _, ok := u.(map[string]any); !ok {
			return specErr("attributes.user must be a mapping")
		}
	}
	if deps, ok := system["dependencies"]; ok {
		list, ok := deps.([]any)
		if !ok {
			return specErr("attributes.system.dependencies must be a list")
		}
		for _, d := range list {
			m, ok := d.(map[string]any)
			if !ok {
				return specErr("dependency must be a mapping")
			}
			if err := checkKeys(m, []string{"scheme", "value"}, false, true); err != nil {
				return err
			}
			if _, ok := m["scheme"].(string); !ok {
				return specErr("dependency scheme must be a string")
			}
			if _, ok := m["value"].(string); !ok {
				return specErr("dependency value must be a string")
			}
		}
	}
	if env, ok := system["environment"]; ok {
		m, ok := env.(map[string]any)
		if !ok {
			return specErr("environment must be a mapping")
		}
		for k, v := range m {
			if _, ok := v.(string); !ok {
				return specErr("environment variable %s must be a string", k)
			}
		}
	}
	return nil
}

func checkResources(list []any) error {
	for _, x := range list {
		r, ok := x.(map[string]any)
		if !ok {
			return specErr("resource must be a mapping")
		}
		t, ok := r["type"]
		if !ok {
			return specErr("type is a required key for resources")
		}
		typ, ok := t.(string)
		if !ok {
			return specErr("type must be a string")
		}
		c, ok := r["count"]
		if !ok {
			return specErr("count is a required key for resources")
		}
		if _, ok := intOf(c); !ok {
			return specErr("resource count must be an integer for type '%s' (got '%s')", typ, pyType(c))
		}
		for _, k := range []string{"id", "unit", "label"} {
			if v, ok := r[k]; ok {
				if _, ok := v.(string); !ok {
					return specErr("%s must be a string", k)
				}
			}
		}
		if v, ok := r["exclusive"]; ok {
			if _, ok := v.(bool); !ok {
				return specErr("exclusive must be a boolean")
			}
		}
		if w, ok := r["with"]; ok {
			children, ok := w.([]any)
			if !ok {
				return specErr("with must be a sequence")
			}
			if err := checkResources(children); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkTask(x any) error {
	t, ok := x.(map[string]any)
	if !ok {
		return specErr("task must be a mapping")
	}
	if err := checkKeys(t, []string{"command", "slot", "count"}, false, true); err != nil {
		return err
	}
	count, ok := t["count"].(map[string]any)
	if !ok {
		return specErr("count must be a mapping")
	}
	if len(count) != 1 {
		return specErr("count must have exactly one key set")
	}
	for k, v := range count {
		switch k {
		case "per_slot", "total":
			n, ok := intOf(v)
			if !ok {
				return specErr("count %s must be an int", k)
			}
			if n <= 0 {
				return specErr("count %s must be > 0", k)
			}
		default:
			return specErr("count per_slot or total must be set")
		}
	}
	if _, ok := t["slot"].(string); !ok {
		return specErr("slot must be a string")
	}
	if a, ok := t["attributes"]; ok {
		if _, ok := a.(map[string]any); !ok {
			return specErr("attributes must be a mapping")
		}
	}
	cmd, ok := t["command"].([]any)
	if !ok {
		return specErr("command must be a list of strings")
	}
	if len(cmd) == 0 {
		return specErr("command array cannot have length of zero")
	}
	for _, c := range cmd {
		if _, ok := c.(string); !ok {
			return specErr("command must be a list of strings")
		}
	}
	return nil
}

// checkKeys mirrors Jobspec.py _validate_keys: missing keys are reported
// in the order of expected, then extraneous ones in sorted order.
func checkKeys(m map[string]any, expected []string, optional, allowExtra bool) error {
	if !optional {
		for _, k := range expected {
			if _, ok := m[k]; !ok {
				return specErr("Missing key (%s)", k)
			}
		}
	}
	if !allowExtra {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !slices.Contains(expected, k) {
				return specErr("Extraneous key (%s)", k)
			}
		}
	}
	return nil
}

// checkConstraint mirrors Jobspec.py _validate_constraint (RFC 31): the
// operators and, or, not, properties, hostlist and ranks. Hosts and ranks
// are not checked against the instance.
func checkConstraint(c map[string]any) error {
	for op, arg := range c {
		args, ok := arg.([]any)
		if !ok {
			return specErr("argument to constraint %s must be a sequence", op)
		}
		switch op {
		case "and", "or", "not":
			for _, a := range args {
				m, ok := a.(map[string]any)
				if !ok {
					return specErr("constraints must be a mapping")
				}
				if err := checkConstraint(m); err != nil {
					return err
				}
			}
		case "properties":
			for _, a := range args {
				s, ok := a.(string)
				if !ok {
					return specErr("property must be a string")
				}
				if strings.ContainsAny(s, "&'\"`|()") {
					return specErr("invalid character in property '%s'", s)
				}
			}
		case "hostlist", "ranks":
			for _, a := range args {
				if _, ok := a.(string); !ok {
					return specErr("%s argument must be a string", op)
				}
			}
		default:
			return specErr("unknown constraint operator '%s'", op)
		}
	}
	return nil
}

// intOf reports whether v (decoded with UseNumber, or by plain
// encoding/json) is an integer, and its value.
func intOf(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n), true
		}
	}
	return 0, false
}

// pyType names v's type as Python would, for validator messages.
func pyType(v any) string {
	switch v.(type) {
	case json.Number, float64:
		return "float"
	case string:
		return "str"
	case bool:
		return "bool"
	case map[string]any:
		return "dict"
	case []any:
		return "list"
	case nil:
		return "NoneType"
	}
	return fmt.Sprintf("%T", v)
}
