package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// Lines from ../shared/flux-wire/cancel.decoded.txt and
// eventlog-watch.decoded.txt (real flux-core 0.88.0 eventlog entries).
var eventSeeds = []string{
	`{"timestamp":1795576038.8199482,"name":"submit","context":{"userid":0,"urgency":16,"flags":0,"version":1}}` + "\n",
	`{"timestamp":1795576038.83111,"name":"validate"}` + "\n",
	`{"timestamp":1795576038.8420346,"name":"priority","context":{"priority":16}}` + "\n",
	`{"timestamp":1795576038.8440154,"name":"alloc","context":{"annotations":{"sched":{"resource_summary":"rank0/core0"}}}}` + "\n",
	`{"timestamp":1795576038.8584783,"name":"start"}` + "\n",
	`{"timestamp":1795576039.4066064,"name":"exception","context":{"type":"test","severity":1,"note":"a note","userid":0}}` + "\n",
	`{"timestamp":1795576040.3648894,"name":"finish","context":{"status":36608}}` + "\n",
	`{"timestamp":1795576041.3025496,"name":"urgency","context":{"userid":0,"urgency":16}}` + "\n",
	`{"timestamp":1795576040.3745108,"name":"release","context":{"ranks":"all","final":true}}`,
}

func TestParseEventTranscript(t *testing.T) {
	want := []Event{
		{1795576038.8199482, "submit", map[string]any{"userid": 0.0, "urgency": 16.0, "flags": 0.0, "version": 1.0}},
		{1795576038.83111, "validate", nil},
		{1795576038.8420346, "priority", map[string]any{"priority": 16.0}},
		{1795576038.8440154, "alloc", map[string]any{"annotations": map[string]any{"sched": map[string]any{"resource_summary": "rank0/core0"}}}},
		{1795576038.8584783, "start", nil},
		{1795576039.4066064, "exception", map[string]any{"type": "test", "severity": 1.0, "note": "a note", "userid": 0.0}},
		{1795576040.3648894, "finish", map[string]any{"status": 36608.0}},
		{1795576041.3025496, "urgency", map[string]any{"userid": 0.0, "urgency": 16.0}},
		{1795576040.3745108, "release", map[string]any{"ranks": "all", "final": true}},
	}
	for i, line := range eventSeeds {
		ev, err := ParseEvent([]byte(line))
		if err != nil || !reflect.DeepEqual(ev, want[i]) {
			t.Errorf("ParseEvent(%s) = %#v, %v; want %#v", line, ev, err, want[i])
		}
	}
}

func TestParseEventInvalid(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `"x"`, `{}`,
		`{"timestamp":1}`,
		`{"name":"x"}`,
		`{"timestamp":"1","name":"x"}`,
		`{"timestamp":1,"name":5}`,
		`{"timestamp":1,"name":""}`,
		`{"timestamp":-1,"name":"x"}`,
		`{"timestamp":1,"name":"x","context":[1]}`,
		`{"timestamp":1,"name":"x","context":"s"}`,
		`{"timestamp":1,"name":"x","context":null}`,
		`{"timestamp":1,"name":"x"} trailing`,
	} {
		if ev, err := ParseEvent([]byte(in)); err == nil || !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("ParseEvent(%s) = %#v, %v; want ErrInvalidEvent", in, ev, err)
		}
	}
}

func TestParseEventlog(t *testing.T) {
	log := eventSeeds[0] + eventSeeds[1] + eventSeeds[6]
	evs, err := ParseEventlog([]byte(log))
	if err != nil || len(evs) != 3 || evs[2].Name != "finish" {
		t.Fatalf("ParseEventlog = %v, %v", evs, err)
	}
	if evs, err := ParseEventlog(nil); err != nil || len(evs) != 0 {
		t.Fatalf("ParseEventlog(nil) = %v, %v", evs, err)
	}
	if _, err := ParseEventlog([]byte(eventSeeds[0] + "\n")); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("ParseEventlog with an empty line: %v", err)
	}
}

func mustEvent(t *testing.T, i int) Event {
	t.Helper()
	ev, err := ParseEvent([]byte(eventSeeds[i]))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestEventContexts(t *testing.T) {
	sub, err := mustEvent(t, 0).Submit()
	if err != nil || sub != (SubmitContext{UserID: 0, Urgency: 16, Flags: 0, Version: 1}) {
		t.Errorf("Submit() = %+v, %v", sub, err)
	}
	pr, err := mustEvent(t, 2).Priority()
	if err != nil || pr.Priority != 16 {
		t.Errorf("Priority() = %+v, %v", pr, err)
	}
	al, err := mustEvent(t, 3).Alloc()
	if err != nil || al.Annotations["sched"].(map[string]any)["resource_summary"] != "rank0/core0" {
		t.Errorf("Alloc() = %+v, %v", al, err)
	}
	if _, err := mustEvent(t, 4).Start(); err != nil {
		t.Errorf("Start() = %v", err)
	}
	ex, err := mustEvent(t, 5).Exception()
	if err != nil || ex.Type != "test" || ex.Severity != 1 || ex.Note != "a note" || ex.UserID == nil || *ex.UserID != 0 {
		t.Errorf("Exception() = %+v, %v", ex, err)
	}
	fin, err := mustEvent(t, 6).Finish()
	if err != nil || fin.Status != 36608 || fin.Status.Result() != 143 {
		t.Errorf("Finish() = %+v, %v", fin, err)
	}
	ur, err := mustEvent(t, 7).Urgency()
	if err != nil || ur.Urgency != 16 {
		t.Errorf("Urgency() = %+v, %v", ur, err)
	}
	// Wrong event, missing keys, wrong types.
	if _, err := mustEvent(t, 0).Finish(); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Finish() of a submit event: %v", err)
	}
	if _, err := (Event{Name: "finish"}).Finish(); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Finish() without status: %v", err)
	}
	if _, err := (Event{Name: "exception", Context: map[string]any{"type": 1, "severity": 0}}).Exception(); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Exception() with a numeric type: %v", err)
	}
}

func TestWaitStatus(t *testing.T) {
	tests := []struct {
		s                    WaitStatus
		exited, signaled, cd bool
		code, sig, result    int
		str                  string
	}{
		{0, true, false, false, 0, 0, 0, "exited 0"},
		{256, true, false, false, 1, 0, 1, "exited 1"},
		{36608, true, false, false, 143, 0, 143, "exited 143"}, // kill.decoded.txt: flux job kill --signal=TERM
		{9, false, true, false, 0, 9, -9, "signaled 9"},
		{15, false, true, false, 0, 15, -15, "signaled 15"},
		{0x86, false, true, true, 0, 6, -6, "signaled 6 (core dumped)"},
		{0x137f, false, false, false, 0x13, 0x7f, 0, "wait status 4991"}, // stopped
	}
	for _, tc := range tests {
		if tc.s.Exited() != tc.exited || tc.s.Signaled() != tc.signaled || tc.s.CoreDumped() != tc.cd ||
			(tc.exited && tc.s.ExitCode() != tc.code) || (tc.signaled && tc.s.Signal() != tc.sig) ||
			tc.s.Result() != tc.result || tc.s.String() != tc.str {
			t.Errorf("WaitStatus(%d): exited %v code %d signaled %v sig %d core %v result %d %q",
				int(tc.s), tc.s.Exited(), tc.s.ExitCode(), tc.s.Signaled(), tc.s.Signal(), tc.s.CoreDumped(), tc.s.Result(), tc.s.String())
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"timestamp":1,"name":"x","context":{"a":[1,{"b":null}]}}`))
	f.Add([]byte(`{"timestamp":1.5e3,"name":"x\"y","context":{"a":[true,false,"\t\/"],"b":{},"c":[]}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		// the one-pass decoder agrees with the field-by-field one
		trimmed := bytes.TrimSuffix(line, []byte("\n"))
		if scanned, ok := scanEvent(trimmed); ok {
			if checked, err := parseEventChecked(trimmed); err != nil || !reflect.DeepEqual(scanned, checked) {
				t.Fatalf("%q: scanner %#v, checked %#v, %v", line, scanned, checked, err)
			}
		}
		if fast, ok := parseEventFast(trimmed); ok {
			if checked, err := parseEventChecked(trimmed); err != nil || !reflect.DeepEqual(fast, checked) {
				t.Fatalf("%q: fast path %#v, checked %#v, %v", line, fast, checked, err)
			}
		}
		ev, err := ParseEvent(line)
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error %v does not match ErrInvalidEvent", err)
			}
			return
		}
		if ev.Name == "" || ev.Timestamp < 0 {
			t.Fatalf("accepted %q as %#v", line, ev)
		}
		// The typed accessors must not panic on whatever parsed.
		_, _ = ev.Submit()
		_, _ = ev.Finish()
		_, _ = ev.Exception()
		_, _ = ev.Alloc()
		_, _ = ev.Urgency()
		_, _ = ev.Priority()
	})
}

// TestScanEventResponse: the scanner decodes eventlog-watch responses as
// encoding/json plus ParseEvent do, and gives up on what it does not know.
func TestScanEventResponse(t *testing.T) {
	for _, tt := range []struct {
		payload string
		ok      bool
	}{
		{`{"event":"{\"timestamp\":1795576038.8199482,\"name\":\"submit\",\"context\":{\"userid\":0,\"urgency\":16,\"flags\":0,\"version\":1}}\n"}`, true},
		{` { "event" : "{\"timestamp\":2,\"name\":\"start\"}" } `, true},
		{`{"event":"{\"timestamp\":2,\"name\":\"exception\",\"context\":{\"note\":\"a \\\"quoted\\\" note\\ttab\"}}\n"}`, true},
		{`{"event":"{\"timestamp\":2,\"name\":\"x\",\"context\":{\"note\":\"\\u00e9\"}}\n"}`, false},
		{`{"event":"{\"timestamp\":2,\"name\":\"x\",\"context\":null}\n"}`, false},
		{`{"event":"{\"timestamp\":2,\"name\":\"x\",\"extra\":1}\n"}`, false},
		{`{"event":"{\"timestamp\":2,\"name\":\"x\"}\n","more":1}`, false},
		{`{"Event":"{\"timestamp\":2,\"name\":\"x\"}\n"}`, false},
		{`{"event":5}`, false},
		{`{"event":"{\"timestamp\":2,\"name\":\"x\"}"} x`, false},
	} {
		ev, ok := scanEventResponse([]byte(tt.payload))
		if ok != tt.ok {
			t.Errorf("scanEventResponse(%s) ok = %v, want %v", tt.payload, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		var resp struct{ Event string }
		if err := json.Unmarshal([]byte(tt.payload), &resp); err != nil {
			t.Fatal(err)
		}
		want, err := ParseEvent([]byte(resp.Event))
		if err != nil || !reflect.DeepEqual(ev, want) {
			t.Errorf("scanEventResponse(%s) = %#v; encoding/json and ParseEvent: %#v, %v", tt.payload, ev, want, err)
		}
	}
}

// TestScanJournalEntry: the scanner decodes journal responses as the
// encoding/json path does, and gives up on what it does not know.
func TestScanJournalEntry(t *testing.T) {
	for _, tt := range []struct {
		payload string
		ok      bool
	}{
		{`{"id":-1,"events":[]}`, true},
		{`{"id":24779948032,"events":[{"timestamp":1.5,"name":"submit","context":{"userid":0,"urgency":16,"flags":0,"version":1}}],"jobspec":{"version":1,"tasks":[{"command":["true"]}]}}`, true},
		{`{"id":5,"events":[{"timestamp":1.5,"name":"alloc"},{"timestamp":2,"name":"start"}],"R":{ "version" : 1 }}`, true},
		{`{"id":5,"events":[]}`, true},
		{`{"id":5,"events":[{"timestamp":1.5,"name":"x","context":null}]}`, false},
		{`{"id":"ƒ2","events":[]}`, false},
		{`{"id":-12,"events":[]}`, false},
		{`{"id":5}`, false},
		{`{"id":5,"events":[],"jobspec":null}`, false},
		{`{"id":5,"events":[],"other":1}`, false},
		{`{"id":5,"events":[]} x`, false},
	} {
		got, ok := scanJournalEntry([]byte(tt.payload))
		if ok != tt.ok {
			t.Errorf("scanJournalEntry(%s) ok = %v, want %v", tt.payload, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		want, err := decodeJournalEntry([]byte(tt.payload))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("scanJournalEntry(%s) = %#v; encoding/json: %#v, %v", tt.payload, got, want, err)
		}
	}
}

func FuzzScanJournalEntry(f *testing.F) {
	f.Add([]byte(`{"id":-1,"events":[]}`))
	f.Add([]byte(`{"id":5,"events":[{"timestamp":1.5,"name":"alloc","context":{"annotations":{"sched":{"resource_summary":"rank0/core0"}}}}],"R":{"version":1}}`))
	f.Add([]byte(`{"id":7,"events":[{"timestamp":1,"name":"submit"}],"jobspec":{"a":[1,"x\"y"]}}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) > clipLine {
			return // encoding/json's path clips long contexts (clip.go); the scanner is not used for them
		}
		got, ok := scanJournalEntry(p)
		if !ok {
			return
		}
		want, err := decodeJournalEntry(p)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: scanner %#v, encoding/json %#v, %v", p, got, want, err)
		}
	})
}
