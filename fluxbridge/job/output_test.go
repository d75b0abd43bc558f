package job

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestParseOutputEvent(t *testing.T) {
	tests := []struct {
		name string
		line string
		want OutputEvent
	}{
		{"header", `{"timestamp":1.5,"name":"header","context":{"version":1,"encoding":{"stdout":"UTF-8","stderr":"UTF-8"},"count":{"stdout":2,"stderr":2},"options":{}}}`,
			OutputEvent{Timestamp: 1.5, Name: "header", Header: &OutputHeader{Version: 1,
				Encoding: map[string]string{"stdout": "UTF-8", "stderr": "UTF-8"},
				Count:    map[string]int{"stdout": 2, "stderr": 2}, Options: map[string]any{}}}},
		{"utf-8 data", `{"timestamp":2,"name":"data","context":{"stream":"stdout","rank":"0","data":"h\u00e9llo \u0000\u001b[0m\n"}}` + "\n",
			OutputEvent{Timestamp: 2, Name: "data", Data: &OutputData{Stream: "stdout", Rank: "0", Data: []byte("h\xc3\xa9llo \x00\x1b[0m\n")}}},
		{"base64 data", `{"timestamp":2,"name":"data","context":{"stream":"stderr","rank":"3","encoding":"base64","data":"/wABgA=="}}`,
			OutputEvent{Timestamp: 2, Name: "data", Data: &OutputData{Stream: "stderr", Rank: "3", Data: []byte{0xff, 0, 1, 0x80}}}},
		{"base64 unpadded", `{"timestamp":2,"name":"data","context":{"stream":"stderr","rank":"3","encoding":"base64","data":"/wABgA"}}`,
			OutputEvent{Timestamp: 2, Name: "data", Data: &OutputData{Stream: "stderr", Rank: "3", Data: []byte{0xff, 0, 1, 0x80}}}},
		{"unknown encoding is raw", `{"timestamp":2,"name":"data","context":{"stream":"stdout","rank":"0","encoding":"UTF-8","data":"x"}}`,
			OutputEvent{Timestamp: 2, Name: "data", Data: &OutputData{Stream: "stdout", Rank: "0", Data: []byte("x")}}},
		{"eof", `{"timestamp":3,"name":"data","context":{"stream":"stderr","rank":"0","eof":true}}`,
			OutputEvent{Timestamp: 3, Name: "data", Data: &OutputData{Stream: "stderr", Rank: "0", EOF: true}}},
		{"data and eof", `{"timestamp":3,"name":"data","context":{"stream":"stdout","rank":"1","data":"last","eof":true}}`,
			OutputEvent{Timestamp: 3, Name: "data", Data: &OutputData{Stream: "stdout", Rank: "1", Data: []byte("last"), EOF: true}}},
		{"redirect", `{"timestamp":4,"name":"redirect","context":{"stream":"stdout","rank":"[0-3]","path":"/tmp/out.txt"}}`,
			OutputEvent{Timestamp: 4, Name: "redirect", Redirect: &OutputRedirect{Stream: "stdout", Rank: "[0-3]", Path: "/tmp/out.txt"}}},
		{"log", `{"timestamp":5,"name":"log","context":{"rank":0,"level":3,"message":"boom","component":"exec","file":"task.c","line":7}}`,
			OutputEvent{Timestamp: 5, Name: "log", Log: &OutputLog{Rank: 0, Level: 3, Message: "boom", Component: "exec", File: "task.c", Line: 7}}},
		{"log without rank", `{"timestamp":5,"name":"log","context":{"level":4,"message":"m"}}`,
			OutputEvent{Timestamp: 5, Name: "log", Log: &OutputLog{Rank: -1, Level: 4, Message: "m"}}},
		{"other event", `{"timestamp":6,"name":"future-thing","context":{"x":1}}`,
			OutputEvent{Timestamp: 6, Name: "future-thing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOutputEvent([]byte(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			if !outputEventEqual(got, tc.want) {
				t.Errorf("got %s\nwant %s", describeOutput(got), describeOutput(tc.want))
			}
		})
	}
}

func TestParseOutputEventInvalid(t *testing.T) {
	tests := []struct{ name, line string }{
		{"not json", `{"timestamp":`},
		{"no name", `{"timestamp":1,"context":{}}`},
		{"no timestamp", `{"name":"data","context":{}}`},
		{"negative timestamp", `{"timestamp":-1,"name":"header","context":{}}`},
		{"context not object", `{"timestamp":1,"name":"data","context":[1]}`},
		{"data without context", `{"timestamp":1,"name":"data"}`},
		{"data without rank", `{"timestamp":1,"name":"data","context":{"stream":"stdout","data":"x"}}`},
		{"data rank not string", `{"timestamp":1,"name":"data","context":{"stream":"stdout","rank":0,"data":"x"}}`},
		{"data without data or eof", `{"timestamp":1,"name":"data","context":{"stream":"stdout","rank":"0"}}`},
		{"bad base64", `{"timestamp":1,"name":"data","context":{"stream":"stdout","rank":"0","encoding":"base64","data":"!!"}}`},
		{"redirect without stream", `{"timestamp":1,"name":"redirect","context":{"rank":"0"}}`},
		{"log without message", `{"timestamp":1,"name":"log","context":{"level":3}}`},
		{"header without context", `{"timestamp":1,"name":"header"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := ParseOutputEvent([]byte(tc.line)); !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("got %s, %v; want ErrInvalidEvent", describeOutput(ev), err)
			}
		})
	}
}

func TestOutputLogString(t *testing.T) {
	tests := []struct {
		l    OutputLog
		want string
	}{
		{OutputLog{Rank: 0, Level: 3, Message: "m", Component: "exec"}, "flux-shell[0]: ERROR: exec: m"},
		{OutputLog{Rank: -1, Level: 5, Message: "note"}, "flux-shell: note"},
		{OutputLog{Rank: 2, Level: 1, Message: "x"}, "flux-shell[2]: FATAL: x"},
		{OutputLog{Rank: 2, Level: 4, Message: "w"}, "flux-shell[2]: WARN: w"},
	}
	for _, tc := range tests {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.l, got, tc.want)
		}
	}
}

func outputEventEqual(a, b OutputEvent) bool {
	return describeOutput(a) == describeOutput(b)
}

// describeOutput renders an event with its data bytes quoted, for
// comparison and messages.
func describeOutput(ev OutputEvent) string {
	var b bytes.Buffer
	b.WriteString(ev.Name)
	b.WriteString(" ")
	b.WriteString(jsonish(ev.Timestamp))
	if ev.Header != nil {
		b.WriteString(" header " + jsonish(*ev.Header))
	}
	if d := ev.Data; d != nil {
		b.WriteString(" data " + jsonish([]any{d.Stream, d.Rank, string(d.Data), d.Data == nil, d.EOF}))
		b.WriteString(fmt.Sprintf(" %q", d.Data))
	}
	if ev.Redirect != nil {
		b.WriteString(" redirect " + jsonish(*ev.Redirect))
	}
	if ev.Log != nil {
		b.WriteString(" log " + jsonish(*ev.Log))
	}
	return b.String()
}

func jsonish(v any) string { return fmt.Sprintf("%+v", v) }
