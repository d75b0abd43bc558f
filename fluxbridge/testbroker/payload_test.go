package testbroker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// TestAppendJSONMatchesEncodingJSON: the hand-written encoder produces the
// bytes encoding/json (without HTML escaping) produces, for every type the
// broker's payloads use, including strings needing escapes.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	line := `{"timestamp":1795576038.8199482,"name":"submit","context":{"userid":0,"urgency":16,"flags":0,"version":1}}` + "\n"
	tests := []struct {
		name string
		v    any
	}{
		{"nil", nil},
		{"plain string", "rank0/core0"},
		{"event line", line},
		{"escapes", "a\"b\\c\nd\re\tf<g>&h"},
		{"control", "bell\x07 back\b feed\f nul\x00"},
		{"unicode", "héllo \u2028 \u2029 ☃"},
		{"invalid utf8", "bad \xff\xfe"},
		{"ints", []any{0, -1, int64(1 << 62), int32(-7), uint32(1 << 31), uint64(1 << 63)}},
		{"bools", []any{true, false}},
		{"job id", job.ID(24779948032)},
		{"numbers", []any{json.Number(""), json.Number("0"), json.Number("-1.5e+10"), json.Number("16")}},
		{"raw", json.RawMessage(`{ "a" : [1, 2] }`)},
		{"raw nil", json.RawMessage(nil)},
		{"raw list", []json.RawMessage{json.RawMessage(`{"x":1}`), json.RawMessage(` 2 `)}},
		{"strings", []string{"a", "b\"", ""}},
		{"nil slices", obj{{"a", []any(nil)}, {"b", []obj(nil)}, {"c", []string(nil)}}},
		{"empty", obj{{"a", []any{}}, {"b", obj{}}, {"c", obj(nil)}}},
		{"float fallback", 1.5},
		{"map fallback", map[string]any{"z": 1, "a": "x"}},
		{"nested", obj{
			{"id", job.ID(7)},
			{"events", []json.RawMessage{json.RawMessage(line[:len(line)-1])}},
			{"R", obj{{"version", 1}, {"execution", obj{{"R_lite", []obj{{{"rank", "0"}, {"children", obj{{"core", "0-3"}}}}}}, {"starttime", real(0)}}}}},
		}},
		{"event", obj{{"event", line}}},
		{"real", []any{real(1795576032.443094), real(0), real(12), real(1e21)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := appendJSON([]byte("prefix"), tt.v)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(tt.v); err != nil {
				t.Fatal(err)
			}
			want := "prefix" + string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
			if string(got) != want {
				t.Errorf("appendJSON = %s\nencoding/json = %s", got, want)
			}
		})
	}
	for _, bad := range []any{real(math.Inf(1)), json.Number("01"), json.Number("1.")} {
		if b, err := appendJSON(nil, bad); err == nil {
			t.Errorf("appendJSON(%#v) = %s, want an error", bad, b)
		}
	}
}

// TestSpecCache: a J is decoded once and its results are the uncached
// ones, errors included; the cache stays bounded.
func TestSpecCache(t *testing.T) {
	good := job.SignNone([]byte(`{"version":1,"tasks":[{"command":["true"],"slot":"task","count":{"per_slot":1}}],"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],"attributes":{"system":{"duration":0}}}`), 1000)
	tests := []struct {
		name      string
		J         string
		unwrapErr bool
		jsonErr   bool
		parseErr  bool
	}{
		{"valid", good, false, false, false},
		{"not signed", "garbage", true, false, false},
		{"not JSON", job.SignNone([]byte(`nope`), 1000), false, true, false},
		{"invalid jobspec", job.SignNone([]byte(`{"version":1}`), 1000), false, false, true},
	}
	var c specCache
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := c.unwrap(tt.J, false)
			if again := c.unwrap(tt.J, false); again != u {
				t.Error("second unwrap decoded again")
			}
			if u.unwrapErr != tt.unwrapErr || (u.jsonErr != nil) != tt.jsonErr {
				t.Fatalf("unwrap = %+v", u)
			}
			if tt.unwrapErr || tt.jsonErr {
				return
			}
			if u.signer != 1000 {
				t.Errorf("signer %d", u.signer)
			}
			p1, err1 := u.parse(true)
			p2, err2 := parseJobspec(u.jobspec, true)
			if (err1 != nil) != tt.parseErr || fmt.Sprint(err1) != fmt.Sprint(err2) {
				t.Fatalf("parse = %v, uncached %v", err1, err2)
			}
			if err1 == nil && (p1.ntasks != p2.ntasks || fmt.Sprint(p1.command) != fmt.Sprint(p2.command)) {
				t.Errorf("parse = %+v, uncached %+v", p1, p2)
			}
			if p, _ := u.parse(true); p != p1 {
				t.Error("second parse parsed again")
			}
		})
	}
	for i := range 2 * specCacheSize {
		c.unwrap(fmt.Sprint(i), false)
	}
	if n := len(c.m); n > specCacheSize {
		t.Errorf("cache holds %d entries, limit %d", n, specCacheSize)
	}
}

// TestAppendEventLine: event lines built directly are what encoding the
// entry as an obj gives.
func TestAppendEventLine(t *testing.T) {
	for _, tt := range []struct {
		ts   float64
		name string
		ctx  obj
	}{
		{1795576038.8199482, "submit", obj{{"userid", int64(0)}, {"urgency", 16}, {"flags", 0}, {"version", 1}}},
		{12, "start", nil},
		{0, "exception", obj{{"type", "exec"}, {"note", "task 0: \"quoted\" é"}}},
		{1.5, "odd\tname", obj{}},
	} {
		got, err := appendEventLine(nil, tt.ts, tt.name, tt.ctx)
		if err != nil {
			t.Fatal(err)
		}
		entry := obj{{"timestamp", real(tt.ts)}, {"name", tt.name}}
		if tt.ctx != nil {
			entry = append(entry, kv{"context", tt.ctx})
		}
		want, err := marshalStd(entry)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("appendEventLine = %s, want %s", got, want)
		}
	}
	if _, err := appendEventLine(nil, math.Inf(1), "x", nil); err == nil {
		t.Error("infinite timestamp encoded")
	}
}
