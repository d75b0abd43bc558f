package jobspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// attemptMark stands for the attempt suffix in a Template's jobspec: it
// cannot come from a spec (the API server refuses NUL in strings).
const attemptMark = "\x00attempt\x00"

// Template is the jobspec of an array's indexes, built once per array and
// rendered per index: flux-core's `flux submit --cc` (python/flux/cli/
// base.py submit_async_with_cc) formats each argument with Python's
// str.format(cc=i) and sets FLUX_JOB_CC=i in the environment. The
// template replaces "{cc}" and "{cc:FORMAT}" (FORMAT an integer format
// such as 03d, 5d or d) anywhere in the jobspec, so in the command, the
// environment, the working directory and the attributes, as flux formats
// every mutable option; "{{cc}}" stays as it is (flux preserves mustache
// templates).
type Template struct {
	parts []part
}

type part struct {
	lit     []byte
	field   bool // the index, formatted with width/zero
	attempt bool // the attempt suffix of the job name
	width   int
	zero    bool
}

// BuildTemplate returns the template of obj's array indexes, with the RFC
// 26 dependencies deps in each, or why the spec cannot be submitted.
func BuildTemplate(obj *fluxjobv1.FluxJob, deps ...job.Dependency) (*Template, *Error) {
	b, jerr := Build(obj, deps...)
	if jerr != nil {
		return nil, jerr
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, invalid("re-reading the jobspec: %v", err)
	}
	attrs, _ := objectAt(doc, "attributes")
	system, ok := objectAt(attrs, "system")
	if !ok {
		return nil, invalid("attributes.system must be an object")
	}
	jobAttr, _ := objectAt(system, "job")
	jobAttr["name"] = Name(obj) + "-{cc}" + attemptMark
	env, ok := objectAt(system, "environment")
	if !ok {
		return nil, invalid("attributes.system.environment must be an object")
	}
	env[fluxjobv1.ArrayIndexEnv] = "{cc}"
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, invalid("encoding the jobspec: %v", err)
	}
	return compile(out), nil
}

// compile splits a jobspec into literal bytes and fields.
func compile(b []byte) *Template {
	t := &Template{}
	mark, _ := json.Marshal(attemptMark)
	mark = mark[1 : len(mark)-1]
	lit := 0
	for i := 0; i < len(b); {
		if bytes.HasPrefix(b[i:], mark) {
			t.parts = append(t.parts, part{lit: b[lit:i]}, part{attempt: true})
			i += len(mark)
			lit = i
			continue
		}
		if b[i] != '{' {
			i++
			continue
		}
		p, n := field(b, i)
		if n == 0 {
			i++
			continue
		}
		t.parts = append(t.parts, part{lit: b[lit:i]}, p)
		i += n
		lit = i
	}
	t.parts = append(t.parts, part{lit: b[lit:]})
	return t
}

// field reads "{cc}" or "{cc:[0][width]d}" at b[i:], not inside "{{...}}";
// n is 0 when there is none.
func field(b []byte, i int) (part, int) {
	rest := b[i:]
	if !bytes.HasPrefix(rest, []byte("{cc")) {
		return part{}, 0
	}
	end := bytes.IndexByte(rest, '}')
	if end < 0 {
		return part{}, 0
	}
	if i > 0 && b[i-1] == '{' && end+1 < len(rest) && rest[end+1] == '}' {
		return part{}, 0 // {{cc}}: a mustache template, kept
	}
	p := part{field: true}
	switch spec := string(rest[3:end]); {
	case spec == "":
	case spec[0] == ':':
		f := spec[1:]
		if len(f) > 0 && f[len(f)-1] == 'd' {
			f = f[:len(f)-1]
		}
		if len(f) > 0 && f[0] == '0' {
			p.zero, f = true, f[1:]
		}
		if f != "" {
			w, err := strconv.Atoi(f)
			if err != nil || w < 0 || w > 64 {
				return part{}, 0
			}
			p.width = w
		}
	default:
		return part{}, 0
	}
	return p, end + 1
}

// Render returns the jobspec of index at attempt (0: the first).
func (t *Template) Render(index, attempt int) []byte {
	n := 0
	for _, p := range t.parts {
		n += len(p.lit) + 12
	}
	out := make([]byte, 0, n)
	for _, p := range t.parts {
		switch {
		case p.field:
			s := strconv.Itoa(index)
			for pad := p.width - len(s); pad > 0; pad-- {
				if p.zero {
					out = append(out, '0')
				} else {
					out = append(out, ' ')
				}
			}
			out = append(out, s...)
		case p.attempt:
			if attempt >= 1 {
				out = append(out, '.')
				out = strconv.AppendInt(out, int64(attempt), 10)
			}
		default:
			out = append(out, p.lit...)
		}
	}
	return out
}

// String describes the template for logs.
func (t *Template) String() string { return fmt.Sprintf("jobspec template (%d parts)", len(t.parts)) }
