package job

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// eventScanner decodes, without reflection, the JSON that eventlog
// entries are made of in practice: objects, arrays, numbers, booleans,
// null, and strings whose escapes are \" \\ \/ \b \f \n \r \t and whose
// bytes are ASCII. Values come out as encoding/json decodes them into an
// interface (float64, string, bool, nil, map[string]any, []any). Anything
// else (a \u escape, a non-ASCII byte, deep nesting, a syntax error) makes
// it give up, and the caller falls back to encoding/json, so the result
// never differs from encoding/json's.
type eventScanner struct {
	b     []byte
	i     int
	depth int
}

// maxScanDepth bounds nesting; deeper input is left to encoding/json.
const maxScanDepth = 64

func (s *eventScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, reporting whether c was there.
func (s *eventScanner) consume(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *eventScanner) value() (any, bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		return s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case bytes.HasPrefix(s.b[s.i:], []byte("true")):
		s.i += 4
		return true, true
	case bytes.HasPrefix(s.b[s.i:], []byte("false")):
		s.i += 5
		return false, true
	case bytes.HasPrefix(s.b[s.i:], []byte("null")):
		s.i += 4
		return nil, true
	}
	return nil, false
}

func (s *eventScanner) object() (map[string]any, bool) {
	if s.depth++; s.depth > maxScanDepth || !s.consume('{') {
		return nil, false
	}
	m := make(map[string]any)
	if s.consume('}') {
		s.depth--
		return m, true
	}
	for {
		s.ws()
		k, ok := s.str()
		if !ok || !s.consume(':') {
			return nil, false
		}
		v, ok := s.value()
		if !ok {
			return nil, false
		}
		m[k] = v
		if s.consume('}') {
			s.depth--
			return m, true
		}
		if !s.consume(',') {
			return nil, false
		}
	}
}

func (s *eventScanner) array() ([]any, bool) {
	if s.depth++; s.depth > maxScanDepth || !s.consume('[') {
		return nil, false
	}
	a := []any{}
	if s.consume(']') {
		s.depth--
		return a, true
	}
	for {
		v, ok := s.value()
		if !ok {
			return nil, false
		}
		a = append(a, v)
		if s.consume(']') {
			s.depth--
			return a, true
		}
		if !s.consume(',') {
			return nil, false
		}
	}
}

// str decodes a string at s.i (which must be '"'). Strings that are
// common eventlog keys and names come out without allocating.
func (s *eventScanner) str() (string, bool) {
	b, ok := s.strBytes()
	if !ok {
		return "", false
	}
	return intern(b), true
}

// strBytes decodes a string at s.i (which must be '"'). The result aliases
// the input unless the string has escapes.
func (s *eventScanner) strBytes() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			out := s.b[start:s.i]
			s.i++
			return out, true
		case c == '\\':
			return s.escapedStr(start)
		case c < 0x20 || c >= 0x80:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// escapedStr finishes a string that has escapes; s.i is at the first one.
// The result is a new slice, sized for the rest of the input at most.
func (s *eventScanner) escapedStr(start int) ([]byte, bool) {
	out := make([]byte, 0, len(s.b)-start)
	out = append(out, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return out, true
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, false
			}
			var r byte
			switch s.b[s.i+1] {
			case '"', '\\', '/':
				r = s.b[s.i+1]
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			default: // \u and invalid escapes
				return nil, false
			}
			out = append(out, r)
			s.i += 2
			continue
		case c < 0x20 || c >= 0x80:
			return nil, false
		}
		out = append(out, c)
		s.i++
	}
	return nil, false
}

// intern returns b as a string, without allocating for the keys and event
// names flux-core's job manager posts (src/modules/job-manager/event.c).
func intern(b []byte) string {
	switch string(b) {
	case "timestamp":
		return "timestamp"
	case "name":
		return "name"
	case "context":
		return "context"
	case "submit":
		return "submit"
	case "validate":
		return "validate"
	case "depend":
		return "depend"
	case "priority":
		return "priority"
	case "alloc":
		return "alloc"
	case "start":
		return "start"
	case "finish":
		return "finish"
	case "release":
		return "release"
	case "free":
		return "free"
	case "clean":
		return "clean"
	case "exception":
		return "exception"
	case "urgency":
		return "urgency"
	case "userid":
		return "userid"
	case "flags":
		return "flags"
	case "version":
		return "version"
	case "status":
		return "status"
	case "type":
		return "type"
	case "severity":
		return "severity"
	case "note":
		return "note"
	case "annotations":
		return "annotations"
	case "sched":
		return "sched"
	case "resource_summary":
		return "resource_summary"
	case "ranks":
		return "ranks"
	case "final":
		return "final"
	case "all":
		return "all"
	}
	return string(b)
}

// number decodes a JSON number as a float64, as encoding/json does for an
// interface value.
func (s *eventScanner) number() (float64, bool) {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if digits() == 0 {
		return 0, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return 0, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// scanEvent decodes an eventlog entry (no trailing newline) with an
// eventScanner: exactly the keys timestamp, name and optionally context,
// each once. It reports false for anything else, leaving the entry to
// parseEventFast and parseEventChecked.
func scanEvent(line []byte) (Event, bool) {
	s := eventScanner{b: line}
	ev, ok := s.event()
	if s.ws(); !ok || s.i != len(s.b) {
		return Event{}, false
	}
	return ev, true
}

// event decodes the eventlog entry object at s.i (see scanEvent).
func (s *eventScanner) event() (Event, bool) {
	if !s.consume('{') {
		return Event{}, false
	}
	var ev Event
	var haveTS, haveName, haveCtx bool
	for {
		s.ws()
		k, ok := s.str()
		if !ok || !s.consume(':') {
			return Event{}, false
		}
		s.ws()
		switch {
		case k == "timestamp" && !haveTS:
			if ev.Timestamp, ok = s.number(); !ok {
				return Event{}, false
			}
			haveTS = true
		case k == "name" && !haveName:
			if ev.Name, ok = s.str(); !ok {
				return Event{}, false
			}
			haveName = true
		case k == "context" && !haveCtx:
			if ev.Context, ok = s.object(); !ok {
				return Event{}, false
			}
			haveCtx = true
		default:
			return Event{}, false
		}
		if s.consume('}') {
			break
		}
		if !s.consume(',') {
			return Event{}, false
		}
	}
	if !haveTS || !haveName || ev.Name == "" || ev.Timestamp < 0 || math.IsInf(ev.Timestamp, 0) {
		return Event{}, false
	}
	return ev, true
}

// scanJournalEntry decodes a job-manager.events-journal response,
// {"id":ID,"events":[ENTRY...]} with optional "jobspec" and "R" objects
// (kept raw), or the sentinel {"id":-1,"events":[]}. It reports false for
// anything else, leaving the response to encoding/json.
func scanJournalEntry(p []byte) (JournalEntry, bool) {
	s := eventScanner{b: p}
	if !s.consume('{') {
		return JournalEntry{}, false
	}
	var e JournalEntry
	var haveID, haveEvents bool
	for {
		s.ws()
		k, ok := s.strBytes()
		if !ok || !s.consume(':') {
			return JournalEntry{}, false
		}
		s.ws()
		switch key := string(k); {
		case key == "id" && !haveID:
			if bytes.HasPrefix(s.b[s.i:], []byte("-1")) {
				s.i += 2
				e.Sentinel = true
			} else {
				start := s.i
				for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
					s.i++
				}
				id, ok := scanUint(s.b[start:s.i])
				if !ok {
					return JournalEntry{}, false
				}
				e.ID = ID(id)
			}
			haveID = true
		case key == "events" && !haveEvents:
			if !s.consume('[') {
				return JournalEntry{}, false
			}
			if !s.consume(']') {
				for {
					s.ws()
					ev, ok := s.event()
					if !ok {
						return JournalEntry{}, false
					}
					e.Events = append(e.Events, ev)
					if s.consume(']') {
						break
					}
					if !s.consume(',') {
						return JournalEntry{}, false
					}
				}
			}
			haveEvents = true
		case (key == "jobspec" && e.Jobspec == nil) || (key == "R" && e.R == nil):
			start := s.i
			if _, ok := s.object(); !ok {
				return JournalEntry{}, false
			}
			raw := append(json.RawMessage(nil), s.b[start:s.i]...)
			if key == "R" {
				e.R = raw
			} else {
				e.Jobspec = raw
			}
		default:
			return JournalEntry{}, false
		}
		if s.consume('}') {
			break
		}
		if !s.consume(',') {
			return JournalEntry{}, false
		}
	}
	if s.ws(); s.i != len(s.b) || !haveID || !haveEvents {
		return JournalEntry{}, false
	}
	if e.Sentinel {
		return JournalEntry{Sentinel: true}, true
	}
	return e, true
}

// scanUint decodes a canonical unsigned decimal integer that fits in 64
// bits (no sign, no leading zero); false for anything else.
func scanUint(d []byte) (uint64, bool) {
	if len(d) == 0 || (len(d) > 1 && d[0] == '0') {
		return 0, false
	}
	var v uint64
	for _, c := range d {
		if c < '0' || c > '9' || v > (math.MaxUint64-9)/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// scanEventResponse decodes a job-info.eventlog-watch response,
// {"event": "<entry>\n"}, and its entry. It reports false for anything
// else, leaving the response to encoding/json.
func scanEventResponse(payload []byte) (Event, bool) {
	s := eventScanner{b: payload}
	if !s.consume('{') {
		return Event{}, false
	}
	s.ws()
	if k, ok := s.str(); !ok || k != "event" || !s.consume(':') {
		return Event{}, false
	}
	s.ws()
	line, ok := s.strBytes()
	if !ok || !s.consume('}') {
		return Event{}, false
	}
	if s.ws(); s.i != len(s.b) {
		return Event{}, false
	}
	return scanEvent(bytes.TrimSuffix(line, []byte("\n")))
}
