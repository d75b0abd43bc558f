package job

import (
	"bytes"
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// An eventlog entry comes from the broker, which is untrusted input: its
// context may be any JSON object of any size. Decoded into maps, JSON
// takes many times its size (a 4 KiB `[[],[],...]` is some 60 KiB of Go
// values), and events are kept per job, so contexts are clipped twice:
// ParseEvent never decodes more than MaxContextBytes of one (a larger
// context keeps its small members and the start of its strings), and
// ClipContext bounds a decoded context by its estimated memory, for those
// who keep events (fluxbridge's Future).
//
// The members the job's lifecycle is read from (EssentialKeys: a finish
// event's status, an exception's type, severity and note, ...) are kept
// first; a clipped context gains ClippedKey.
const (
	// MaxContextBytes is the most bytes of an event's context, as JSON,
	// that ParseEvent decodes whole. flux-core's contexts are a few
	// hundred bytes (an exception note is a line).
	MaxContextBytes = 4 << 10
	// MaxClippedString is the most bytes kept of a string member of a
	// clipped context (cut at a character boundary).
	MaxClippedString = 1 << 10
	// ClippedKey is the member a clipped context gains: the size in bytes
	// of the context the broker sent (ParseEvent), or its estimated size
	// in memory (ClipContext), as a float64 like any JSON number.
	ClippedKey = "fluxbridge.clipped"
	// maxKeyBytes is the longest member name a clipped context keeps.
	maxKeyBytes = 128
	// maxNameBytes is the longest event name ParseEvent accepts;
	// flux-core's are a word.
	maxNameBytes = 256
)

// EssentialKeys are the context members that clipping keeps before any
// other (strings cut to MaxClippedString): what the lifecycle events
// carry and what a job's outcome is read from.
var EssentialKeys = []string{"status", "type", "severity", "note", "userid", "urgency", "priority", "flags", "version"}

func isEssential(k string) bool {
	for _, e := range EssentialKeys {
		if k == e {
			return true
		}
	}
	return false
}

// clipLine is the longest eventlog line that is decoded as it is; a longer
// one goes through parseClipped. It leaves room for the name and timestamp.
const clipLine = MaxContextBytes + 512

// parseClipped decodes an eventlog line too long to decode whole: the name
// and timestamp as ParseEvent would, and the context through clipRaw.
func parseClipped(line []byte) (Event, error) {
	var f struct {
		Timestamp *float64        `json:"timestamp"`
		Name      *string         `json:"name"`
		Context   json.RawMessage `json:"context"`
	}
	// Decoding into RawMessage and strings costs about the line's size,
	// unlike decoding the context into maps.
	if err := json.Unmarshal(line, &f); err != nil {
		return parseEventChecked(line) // explains what is wrong
	}
	if f.Name == nil || f.Timestamp == nil || f.Context == nil || len(f.Context) <= MaxContextBytes {
		// small context, long name or other trouble: the usual checks
		if f.Name != nil && len(*f.Name) > maxNameBytes {
			return Event{}, eventErr("name of %d bytes", len(*f.Name))
		}
		return parseEventChecked(line)
	}
	if len(*f.Name) > maxNameBytes {
		return Event{}, eventErr("name of %d bytes", len(*f.Name))
	}
	// check name and timestamp without the context
	ev, err := parseEventChecked(mustJSON(map[string]any{"name": *f.Name, "timestamp": *f.Timestamp}))
	if err != nil {
		return Event{}, err
	}
	if f.Context[0] != '{' {
		return Event{}, eventErr(`%q: "context" is not an object`, ev.Name)
	}
	ctx, ok := clipRaw(f.Context)
	if !ok {
		return parseEventChecked(line)
	}
	ev.Context = ctx
	return ev, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// clipRaw decodes a context object of more than MaxContextBytes member by
// member, never decoding a large member into maps: essential members are
// kept (strings cut), then the others in document order while their raw
// size fits in MaxContextBytes; long strings are cut, other large members
// dropped. It reports false if raw is not a JSON object.
func clipRaw(raw []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	out := make(map[string]any)
	budget := MaxContextBytes
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, ok := t.(string)
		if !ok {
			return nil, false
		}
		var v json.RawMessage // a copy of the member: garbage once looked at
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if len(key) > maxKeyBytes || key == ClippedKey {
			continue
		}
		essential := isEssential(key)
		if old, dup := out[key]; dup && !essential {
			// a repeated member replaces the earlier one (the last one
			// wins, as encoding/json does): give back what it cost
			b, _ := json.Marshal(old)
			budget += len(key) + len(b) + 4
			delete(out, key)
		}
		cost := len(key) + len(v) + 4
		if essential || cost <= budget {
			if len(v) <= MaxContextBytes {
				var val any
				if json.Unmarshal(v, &val) != nil {
					return nil, false
				}
				if s, ok := val.(string); ok {
					val = cutString(s, MaxClippedString)
					cost = len(key) + len(val.(string)) + 4
				}
				if !essential {
					budget -= cost
				}
				out[key] = val
				continue
			}
		}
		if v[0] == '"' {
			// a long string: decoding it costs its size, once
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, false
			}
			n := MaxClippedString
			if !essential {
				n = min(n, budget-len(key)-4)
			}
			if n > 0 {
				s = cutString(s, n)
				out[key] = s
				if !essential {
					budget -= len(key) + len(s) + 4
				}
			}
		}
		// other large members are dropped
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, false
	}
	out[ClippedKey] = float64(len(raw))
	return out, true
}

// cutString returns s cut to at most n bytes at a character boundary.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// ContextCost estimates the memory a decoded context takes in bytes
// (maps, strings, slices and interface boxes as encoding/json makes
// them). It is what ClipContext bounds.
func ContextCost(ctx map[string]any) int {
	if ctx == nil {
		return 0
	}
	return valueCost(ctx)
}

func valueCost(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := 48
		for k, e := range x {
			n += 16 + len(k) + 16 + valueCost(e)
		}
		return n
	case []any:
		n := 24
		for _, e := range x {
			n += 16 + valueCost(e)
		}
		return n
	case string:
		return 16 + len(x)
	}
	return 8
}

// ClipContext returns ctx if its estimated memory (ContextCost) is at most
// max bytes; otherwise a new map with the EssentialKeys members (strings
// cut to MaxClippedString) and then, in key order, the others that still
// fit, plus ClippedKey holding ContextCost(ctx). ctx is not modified.
func ClipContext(ctx map[string]any, max int) map[string]any {
	cost := ContextCost(ctx)
	if cost <= max {
		return ctx
	}
	out := make(map[string]any)
	budget := max
	for _, k := range EssentialKeys {
		v, ok := ctx[k]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case string:
			v = cutString(x, MaxClippedString)
		case map[string]any, []any:
			if valueCost(v) > MaxClippedString {
				continue
			}
		}
		out[k] = v
		budget -= 32 + len(k) + valueCost(v)
	}
	keys := make([]string, 0, len(ctx))
	for k := range ctx {
		if _, done := out[k]; !done && k != ClippedKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		c := 32 + len(k) + valueCost(ctx[k])
		if c > budget {
			continue
		}
		out[k] = ctx[k]
		budget -= c
	}
	out[ClippedKey] = float64(cost)
	return out
}
