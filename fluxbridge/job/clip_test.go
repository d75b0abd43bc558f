package job

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func eventLine(t testing.TB, name string, ctx string) []byte {
	t.Helper()
	return []byte(fmt.Sprintf(`{"timestamp":1700000000.5,"name":%q,"context":%s}`, name, ctx))
}

// TestParseEventClips: a context over MaxContextBytes keeps its essential
// members (strings cut to MaxClippedString), small members while they
// fit, and gains ClippedKey; large non-string members are dropped; small
// contexts are untouched.
func TestParseEventClips(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	nested := "[" + strings.Repeat("[],", 1<<18) + "[]]"
	tests := []struct {
		name     string
		ctx      string
		want     map[string]any // members that must be there
		absent   []string
		clipped  bool
		maxBytes int // bound on the JSON of the decoded context
	}{
		{name: "small context untouched", ctx: `{"status":256,"note":"short"}`,
			want: map[string]any{"status": float64(256), "note": "short"}, absent: []string{ClippedKey}},
		{name: "huge note cut", ctx: `{"type":"exec","severity":0,"note":"` + big + `","userid":1000}`,
			want:    map[string]any{"type": "exec", "severity": float64(0), "note": big[:MaxClippedString], "userid": float64(1000)},
			clipped: true, maxBytes: 2 * MaxContextBytes},
		{name: "huge nested member dropped, status kept", ctx: `{"junk":` + nested + `,"status":9}`,
			want: map[string]any{"status": float64(9)}, absent: []string{"junk"}, clipped: true, maxBytes: MaxContextBytes},
		{name: "essentials after a flood of small members", ctx: `{` + strings.Repeat(`"k":1,`, 1<<16) + `"a":{"b":1},"status":0}`,
			want: map[string]any{"status": float64(0), "k": float64(1), "a": map[string]any{"b": float64(1)}}, clipped: true, maxBytes: MaxContextBytes},
		{name: "many members, budget bounds them", ctx: `{` + manyKeys(20000) + `,"severity":1}`,
			want: map[string]any{"severity": float64(1)}, clipped: true, maxBytes: 2 * MaxContextBytes},
		{name: "string cut at a character boundary", ctx: `{"note":"` + strings.Repeat("é", MaxContextBytes) + `"}`,
			want: map[string]any{"note": strings.Repeat("é", MaxClippedString/2)}, clipped: true, maxBytes: 2 * MaxContextBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseEvent(eventLine(t, "exception", tt.ctx))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Name != "exception" || ev.Timestamp != 1700000000.5 {
				t.Errorf("event = %q %v", ev.Name, ev.Timestamp)
			}
			for k, v := range tt.want {
				if got, err := json.Marshal(ev.Context[k]); err != nil || string(got) != string(mustJSON(v)) {
					t.Errorf("%s = %.80s, want %.80s", k, got, mustJSON(v))
				}
			}
			for _, k := range tt.absent {
				if _, ok := ev.Context[k]; ok {
					t.Errorf("%s present", k)
				}
			}
			if _, ok := ev.Context[ClippedKey]; ok != tt.clipped {
				t.Errorf("clipped marker: %v, want %v", ok, tt.clipped)
			}
			if tt.maxBytes > 0 {
				if b, _ := json.Marshal(ev.Context); len(b) > tt.maxBytes {
					t.Errorf("clipped context is %d bytes, want <= %d", len(b), tt.maxBytes)
				}
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"key%d":"value%d"`, i, i)
	}
	return b.String()
}

// TestParseEventClipMemory: decoding a 1 MiB context of empty arrays (some
// 20 MiB of Go values when decoded whole) allocates a few times the line,
// and through the eventlog-watch response too.
func TestParseEventClipMemory(t *testing.T) {
	line := eventLine(t, "exception", `{"junk":[`+strings.Repeat("[],", 1<<18)+`[]],"type":"x","severity":1}`)
	resp := mustJSON(map[string]string{"event": string(line)})
	for _, tt := range []struct {
		name  string
		parse func() (Event, error)
	}{
		{"ParseEvent", func() (Event, error) { return ParseEvent(line) }},
		{"eventlog-watch response", func() (Event, error) { return decodeEventResponse(1, "eventlog", resp) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			ev, err := tt.parse()
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := ev.Context["junk"]; ok || ev.Context["type"] != "x" {
				t.Errorf("context = %v", ev.Context)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 8*uint64(len(line)) {
				t.Errorf("allocated %d bytes for a %d-byte line", got, len(line))
			}
		})
	}
}

func TestParseEventHugeName(t *testing.T) {
	line := []byte(`{"timestamp":1,"name":"` + strings.Repeat("n", 1<<20) + `"}`)
	if _, err := ParseEvent(line); err == nil {
		t.Fatal("a 1 MiB event name was accepted")
	}
}

// TestClipContext: a decoded context over the cost bound keeps the
// essentials and what fits; one under it is returned as it is.
func TestClipContext(t *testing.T) {
	small := map[string]any{"status": float64(0)}
	if got := ClipContext(small, 1024); len(got) != 1 || got["status"] != float64(0) {
		t.Errorf("small context changed: %v", got)
	}
	big := map[string]any{"type": "cancel", "severity": float64(0), "note": strings.Repeat("n", 3000), "a": "x"}
	for i := range 1000 {
		big[fmt.Sprint("k", i)] = []any{float64(i)}
	}
	got := ClipContext(big, 2048)
	if got["type"] != "cancel" || got["severity"] != float64(0) || len(got["note"].(string)) != MaxClippedString || got["a"] != "x" {
		t.Errorf("essentials: %v %v %d %v", got["type"], got["severity"], len(got["note"].(string)), got["a"])
	}
	if _, ok := got[ClippedKey]; !ok {
		t.Error("no clipped marker")
	}
	if c := ContextCost(got); c > 2048+MaxClippedString+256 {
		t.Errorf("clipped cost %d", c)
	}
	if len(big) != 1004 {
		t.Error("ClipContext modified its argument")
	}
}

// FuzzClipRaw: whatever object clipRaw accepts comes out within its bound
// (MaxContextBytes for the other members, MaxClippedString per essential
// string) and keeps an essential scalar member as encoding/json decodes
// it.
func FuzzClipRaw(f *testing.F) {
	f.Add([]byte(`{"status":256,"note":"x","a":[1,2,{"b":null}]}`))
	f.Add([]byte(`{"type":"exec","severity":0,"note":"` + strings.Repeat("é", 3000) + `"}`))
	f.Add([]byte(`{"k":1,"k":2,"junk":[[],[],[]]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, ok := clipRaw(raw)
		if !ok {
			return
		}
		var whole map[string]any
		if err := json.Unmarshal(raw, &whole); err != nil {
			t.Fatalf("clipRaw accepted %q, encoding/json: %v", raw, err)
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		if bound := MaxContextBytes + len(EssentialKeys)*(2*MaxClippedString+64) + 64; len(b) > bound {
			t.Fatalf("clipped to %d bytes, bound %d", len(b), bound)
		}
		for _, k := range EssentialKeys {
			switch v := whole[k].(type) {
			case float64, bool, nil:
				if _, present := whole[k]; present && out[k] != v {
					t.Fatalf("%s: %v, want %v", k, out[k], v)
				}
			}
		}
	})
}
