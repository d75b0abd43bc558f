// Package jobspec translates a FluxJob's spec into the Flux jobspec it is
// submitted with: spec.jobspec or spec.command with its options, the job
// name that makes submission exactly-once (Name), the owner attribute, and
// the RFC 26 dependencies.
package jobspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// Name is the Flux job name (attributes.system.job.name) the
// controller gives a FluxJob's job: the prefix and the FluxJob's UID,
// unique per object for ever. job-list can find a job by it (see
// lookupJob), which is what makes submission exactly-once.
func Name(obj *fluxjobv1.FluxJob) string {
	return fluxjobv1.FluxJobNamePrefix + string(obj.UID)
}

// IndexName is the Flux job name of one attempt of one index of obj:
// Name, then "-<index>" for an index of an array (index -1: not an array),
// then ".<attempt>" for a retry (attempt 0 is the first job and adds
// nothing): index 7, attempt 2 is fluxjob-<uid>-7.2. Each is submitted
// exactly once, looked up by this name after a crash.
func IndexName(obj *fluxjobv1.FluxJob, index, attempt int) string {
	name := Name(obj)
	if index >= 0 {
		name += "-" + strconv.Itoa(index)
	}
	if attempt > 0 {
		name += "." + strconv.Itoa(attempt)
	}
	return name
}

// ownerAttribute is attributes.user.fluxjob: which FluxJob a Flux job
// belongs to, for humans reading `flux job info`.
func ownerAttribute(obj *fluxjobv1.FluxJob) map[string]any {
	return map[string]any{"namespace": obj.Namespace, "name": obj.Name, "uid": string(obj.UID)}
}

// Build returns the JSON jobspec to submit for obj, with the job
// name and owner attribute set, or a failure for a spec the controller
// can tell is unusable without asking the broker (too large, not an
// object, one the broker would accept but no job can run from: see
// job.Jobspec.CheckRunnable; a command FromCommand refuses). A full
// spec.jobspec is otherwise passed to the broker as it is, so that its own
// validator decides and its message reaches the status; only
// attributes.system.job.name (which a user-set name is replaced by) and
// attributes.user.fluxjob are set.
//
// deps are RFC 26 dependencies (see beforeSubmit), added to
// attributes.system.dependencies after any the jobspec has.
func Build(obj *fluxjobv1.FluxJob, deps ...job.Dependency) ([]byte, *Error) {
	return BuildNamed(obj, Name(obj), deps...)
}

// BuildNamed is Build for the job named name (IndexName: a retry, an
// index of an array).
func BuildNamed(obj *fluxjobv1.FluxJob, name string, deps ...job.Dependency) ([]byte, *Error) {
	if fail := droppedError(obj); fail != nil {
		return nil, fail // the cache kept only its size (Dropped)
	}
	if obj.Spec.Jobspec != nil {
		return buildFromJobspec(obj, name, deps)
	}
	return buildFromCommand(obj, name, deps)
}

// Error is why a FluxJob's spec cannot be submitted, as a condition
// reason (InvalidJobspec, JobspecTooLarge) and message.
type Error struct {
	Reason, Message string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

func invalid(format string, args ...any) *Error {
	return &Error{Reason: fluxjobv1.ReasonInvalidJobspec, Message: fmt.Sprintf(format, args...)}
}

func buildFromJobspec(obj *fluxjobv1.FluxJob, name string, deps []job.Dependency) ([]byte, *Error) {
	raw := obj.Spec.Jobspec.Raw
	if len(raw) > fluxjobv1.MaxJobspecBytes {
		return nil, &Error{Reason: fluxjobv1.ReasonJobspecTooLarge,
			Message: fmt.Sprintf("spec.jobspec is %d bytes, more than the %d allowed", len(raw), fluxjobv1.MaxJobspecBytes)}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep integers integers
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, invalid("spec.jobspec is not a JSON object: %v", err)
	}
	attrs, ok := objectAt(doc, "attributes")
	if !ok {
		return nil, invalid("spec.jobspec.attributes must be an object")
	}
	system, ok := objectAt(attrs, "system")
	if !ok {
		return nil, invalid("spec.jobspec.attributes.system must be an object")
	}
	jobAttr, ok := objectAt(system, "job")
	if !ok {
		return nil, invalid("spec.jobspec.attributes.system.job must be an object")
	}
	// A jobspec the broker's validator accepts but no job could run
	// from (no resources, no tasks, a task slot naming no resource...)
	// fails here, with the reason; one the validator itself refuses goes
	// to the broker, whose message then lands in the status.
	if js, err := job.Parse(raw); err == nil {
		if err := js.CheckRunnable(); err != nil {
			return nil, invalid("spec.jobspec cannot run: %v", err)
		}
	}
	jobAttr["name"] = name
	user, ok := objectAt(attrs, "user")
	if !ok {
		return nil, invalid("spec.jobspec.attributes.user must be an object")
	}
	user[fluxjobv1.UserAttributeKey] = ownerAttribute(obj)
	if len(deps) > 0 {
		list, _ := system["dependencies"].([]any)
		for _, d := range deps {
			list = append(list, map[string]any{"scheme": d.Scheme, "value": d.Value})
		}
		system["dependencies"] = list
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, invalid("encoding spec.jobspec: %v", err)
	}
	return b, nil
}

// objectAt returns m[key] as an object, creating it if absent; false if
// it is present but not an object.
func objectAt(m map[string]any, key string) (map[string]any, bool) {
	v, ok := m[key]
	if !ok || v == nil {
		o := map[string]any{}
		m[key] = o
		return o, true
	}
	o, ok := v.(map[string]any)
	return o, ok
}

func buildFromCommand(obj *fluxjobv1.FluxJob, name string, deps []job.Dependency) ([]byte, *Error) {
	s := &obj.Spec
	opts := job.CommandOptions{
		NumTasks:     int(deref(s.Tasks)),
		CoresPerTask: int(deref(s.CoresPerTask)),
		GPUsPerTask:  int(deref(s.GPUsPerTask)),
		NumNodes:     int(deref(s.Nodes)),
		Exclusive:    s.Exclusive,
		Cwd:          s.WorkingDir,
		Name:         name,
		Queue:        s.Queue,
		Environment:  map[string]string{},
	}
	if s.Duration != nil {
		opts.Duration = s.Duration.Duration
	}
	// Values are never logged: they may hold secrets.
	for _, e := range s.Env {
		opts.Environment[e.Name] = e.Value
	}
	user := map[string]any{}
	if s.Attributes != nil && len(s.Attributes.Raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(s.Attributes.Raw))
		dec.UseNumber()
		if err := dec.Decode(&user); err != nil {
			return nil, invalid("spec.attributes is not a JSON object: %v", err)
		}
		if user == nil {
			user = map[string]any{}
		}
	}
	user[fluxjobv1.UserAttributeKey] = ownerAttribute(obj)
	opts.UserAttributes = user
	js, err := job.FromCommand(s.Command, opts)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if len(deps) > 0 {
		js.Attributes.System.Dependencies = deps
	}
	b, err := js.Marshal()
	if err != nil {
		return nil, invalid("encoding the jobspec: %v", err)
	}
	if len(b) > fluxjobv1.MaxJobspecBytes {
		return nil, &Error{Reason: fluxjobv1.ReasonJobspecTooLarge,
			Message: fmt.Sprintf("the jobspec built from spec.command is %d bytes, more than the %d allowed", len(b), fluxjobv1.MaxJobspecBytes)}
	}
	return b, nil
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// EnvNames lists the names (never the values) of spec.env, sorted, for
// logs.
func EnvNames(obj *fluxjobv1.FluxJob) []string {
	names := make([]string, 0, len(obj.Spec.Env))
	for _, e := range obj.Spec.Env {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	return names
}

// Scheme is the Flux dependency scheme for a condition: "after" is
// submitted as its 0.88 name "afterstart" (flux-core 0.88 raises a
// severity-3 exception for the deprecated name), an empty condition as the
// default afterok.
func Scheme(c fluxjobv1.DependencyCondition) string {
	switch c {
	case "", fluxjobv1.DependAfterOK:
		return string(fluxjobv1.DependAfterOK)
	case fluxjobv1.DependAfter:
		return string(fluxjobv1.DependAfterStart)
	}
	return string(c)
}

// BeginTime is spec.beginTime as `flux submit --begin-time`
// writes it: scheme begin-time, the time as a decimal number of seconds in
// a string (python/flux/cli/base.py BeginTimeAction; the begin-time plugin
// parses it with strtod).
func BeginTime(obj *fluxjobv1.FluxJob) []job.Dependency {
	if obj.Spec.BeginTime == nil {
		return nil
	}
	v := strconv.FormatFloat(float64(obj.Spec.BeginTime.Unix()), 'f', 1, 64)
	return []job.Dependency{{Scheme: "begin-time", Value: v}}
}

// InputBytes is the size of what a jobspec is built from: the raw
// spec.jobspec, or the command words, environment and user attributes of
// a command. The jobspec built from them is at least as large, so more
// than MaxJobspecBytes here is more than MaxJobspecBytes there.
func InputBytes(s *fluxjobv1.FluxJobSpec) int {
	n := 0
	if s.Jobspec != nil {
		n += len(s.Jobspec.Raw)
	}
	if s.Attributes != nil {
		n += len(s.Attributes.Raw)
	}
	for _, c := range s.Command {
		n += len(c)
	}
	for _, e := range s.Env {
		n += len(e.Name) + len(e.Value)
	}
	return n
}

// Dropped stands, in the cache, for a spec too large to keep: only its
// size is left. It is a runtime.Object so that it can sit in
// spec.jobspec's RawExtension and survive the cache's deep copies; an API
// object can never carry one.
type Dropped struct {
	// Bytes is the size of the spec's jobspec inputs (InputBytes).
	Bytes int `json:"droppedBytes"`
}

// GetObjectKind implements runtime.Object.
func (d *Dropped) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (d *Dropped) DeepCopyObject() runtime.Object { c := *d; return &c }

// droppedError is the failure of a FluxJob whose spec the cache
// dropped as too large, or nil.
func droppedError(obj *fluxjobv1.FluxJob) *Error {
	if obj.Spec.Jobspec == nil {
		return nil
	}
	d, ok := obj.Spec.Jobspec.Object.(*Dropped)
	if !ok {
		return nil
	}
	return &Error{Reason: fluxjobv1.ReasonJobspecTooLarge, Message: fmt.Sprintf(
		"the jobspec inputs (spec.jobspec, or spec.command, spec.env and spec.attributes) are %d bytes, more than the %d allowed",
		d.Bytes, fluxjobv1.MaxJobspecBytes)}
}
