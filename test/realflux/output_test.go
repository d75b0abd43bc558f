package realflux

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// EnvCaptureDir, when set, makes TestOutputEventlog write its byte
// transcripts there (NAME.jsonl, NAME.stdout.txt, NAME.decoded.txt); the
// committed copies are in fluxbridge/job/testdata:
//
//	REALFLUX_CAPTURE_DIR=$PWD/fluxbridge/job/testdata go test -run TestOutputEventlog ./test/realflux/
const EnvCaptureDir = "REALFLUX_CAPTURE_DIR"

// outputEvent is one entry of a guest.output eventlog as `flux job
// eventlog -f json` prints it.
type outputEvent struct {
	Name    string         `json:"name"`
	Context map[string]any `json:"context"`
}

// TestOutputEventlog runs jobs that write to stdout and stderr, one with
// its stdout redirected to a file and one writing bytes that are not
// UTF-8, and follows each job's guest.output eventlog with `flux job
// eventlog --follow --format=json --path=output` through a recording
// proxy: the client's job-info.eventlog-watch request (path
// "guest.output", flags 1 = WAITCREATE) and every response, byte for
// byte. It checks the RFC 24 entries flux-core 0.88 writes
// (src/shell/output/kvs.c, src/common/libioencode/ioencode.c): a "header"
// first (version 1, UTF-8 encodings, one stdout and one stderr per task,
// empty options), "data" entries {stream, rank (a string), data} with
// "eof": true at the end of each stream, "encoding": "base64" for bytes
// that are not UTF-8, and for --output=FILE one "redirect" entry
// {stream, rank (an idset string, "0" for one task), path} for each of
// stdout and stderr (--output sends both to the file) and no data.
func TestOutputEventlog(t *testing.T) {
	uri := realURI(t)
	// The redirected job writes job.out relative to its working
	// directory, the submitting command's (a relative path keeps the
	// committed transcript free of this machine's paths).
	dir := t.TempDir()
	outFile := filepath.Join(dir, "job.out")
	cases := []struct {
		name     string
		submit   []string
		stdout   string // the job's stdout in the eventlog, "" if redirected
		stderr   string
		redirect []string // the streams redirected, if any
		base64   bool
	}{
		{name: "output-eventlog", submit: []string{"sh", "-c", `sleep 0.5; echo out1; echo err1 >&2; sleep 0.3; printf 'out2 no newline'`},
			stdout: "out1\nout2 no newline", stderr: "err1\n"},
		{name: "output-eventlog-redirect", submit: []string{"--output=job.out", "sh", "-c", `sleep 0.5; echo to-file; echo err-to-file >&2`},
			redirect: []string{"stdout", "stderr"}},
		{name: "output-eventlog-base64", submit: []string{"sh", "-c", `sleep 0.5; printf '\377\376bin\n'`},
			stdout: "\xff\xfebin\n", base64: true},
	}
	// Each job sleeps first, so that the watch starts while it runs: a
	// WAITCREATE watch of guest.output started around the start or the
	// end of a job that lasts a few milliseconds sometimes never ends,
	// without a single entry (2 of 12 tries of `flux submit sh -c "echo
	// x"` then at once `flux job eventlog -F -p output`, flux-core 0.88.0;
	// 0 of 15 when the job sleeps 0.5 s first or when the watch starts
	// after the job's clean event).
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := exec.CommandContext(ctxT(t), "flux", append([]string{"submit"}, tc.submit...)...)
			sub.Dir, sub.Env = dir, append(os.Environ(), "FLUX_URI="+uri)
			idb, err := sub.Output()
			if err != nil {
				t.Fatalf("flux submit: %v", err)
			}
			id := strings.TrimSpace(string(idb))
			rec := startRecorder(t, uri)
			cmd := exec.CommandContext(ctxT(t), "flux", "job", "eventlog", "--follow", "--format=json", "--path=output", id)
			cmd.Env = append(os.Environ(), "FLUX_URI="+rec.URI(), "LC_ALL=C.UTF-8")
			// --follow waits for an event named "clean", which an output
			// eventlog never has: the command prints every entry, then
			// exits 1 with "event 'clean' never received" when the watch
			// ends (flux-core src/cmd/job/eventlog.c).
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			rc := 0
			if ee, ok := err.(*exec.ExitError); ok && strings.Contains(stderr.String(), "never received") {
				rc, err = ee.ExitCode(), nil
			}
			if err != nil {
				t.Fatalf("flux job eventlog -F -p output %s: %v: %s", id, err, stderr.String())
			}
			rec.Close()
			lines := rec.transcript()
			checkOutputRequest(t, lines)
			evs := parseOutputEvents(t, out)
			checkOutputEvents(t, evs, tc.stdout, tc.stderr, tc.redirect, tc.base64)
			if len(tc.redirect) > 0 {
				data, err := os.ReadFile(outFile)
				if err != nil || !strings.Contains(string(data), "to-file") {
					t.Errorf("redirected output file: %q, %v", data, err)
				}
			}
			if capture := os.Getenv(EnvCaptureDir); capture != "" {
				writeCapture(t, capture, tc.name, lines, fmt.Sprintf("flux submit %s -> %s\nflux job eventlog --follow --format=json --path=output %s\n%s%src=%d\n",
					strings.Join(tc.submit, " "), id, id, out, stderr.String(), rc))
			}
		})
	}
}

// checkOutputRequest decodes the client's messages and checks its one
// watch request.
func checkOutputRequest(t *testing.T, lines []string) {
	t.Helper()
	s := loadTranscript(t, lines)
	var watch *wire.Message
	for _, c := range s.Conns {
		for _, framed := range c.Client {
			var m wire.Message
			if err := m.UnmarshalBinary(framed[wire.PrefixSize:]); err != nil {
				t.Fatalf("client message: %v", err)
			}
			if m.Topic == "job-info.eventlog-watch" {
				watch = &m
			}
		}
	}
	if watch == nil {
		t.Fatal("no job-info.eventlog-watch request in the transcript")
	}
	var req struct {
		ID    uint64 `json:"id"`
		Path  string `json:"path"`
		Flags int    `json:"flags"`
	}
	if err := watch.DecodeJSON(&req); err != nil {
		t.Fatal(err)
	}
	if req.Path != "guest.output" || req.Flags != 1 || watch.Flags&wire.FlagStreaming == 0 {
		t.Errorf("watch request %s; want path guest.output, flags 1 (WAITCREATE), streaming", watch.PayloadString())
	}
}

// loadTranscript parses transcript lines as wiretest does a file.
func loadTranscript(t *testing.T, lines []string) *wiretest.Scenario {
	t.Helper()
	dir := t.TempDir()
	if err := writeLines(filepath.Join(dir, "x.jsonl"), lines); err != nil {
		t.Fatal(err)
	}
	all, err := wiretest.Load(dir)
	if err != nil || len(all) != 1 {
		t.Fatalf("loading the transcript: %v", err)
	}
	return all[0]
}

func parseOutputEvents(t *testing.T, out []byte) []outputEvent {
	t.Helper()
	var evs []outputEvent
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var ev outputEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("eventlog line %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkOutputEvents checks the entries of one job's guest.output.
func checkOutputEvents(t *testing.T, evs []outputEvent, stdout, stderr string, redirect []string, b64 bool) {
	t.Helper()
	if len(evs) == 0 || evs[0].Name != "header" {
		t.Fatalf("guest.output does not start with a header: %+v", evs)
	}
	h, _ := json.Marshal(evs[0].Context)
	const wantHeader = `{"count":{"stderr":1,"stdout":1},"encoding":{"stderr":"UTF-8","stdout":"UTF-8"},"options":{},"version":1}`
	if string(h) != wantHeader {
		t.Errorf("header context %s; want %s", h, wantHeader)
	}
	got := map[string]string{}
	eof := map[string]bool{}
	sawBase64 := false
	var redirected []string
	for _, ev := range evs[1:] {
		switch ev.Name {
		case "data":
			stream, _ := ev.Context["stream"].(string)
			if rank, ok := ev.Context["rank"].(string); !ok || rank != "0" {
				t.Errorf("data entry rank %#v; want the string \"0\"", ev.Context["rank"])
			}
			if eof[stream] {
				t.Errorf("%s data after its eof: %v", stream, ev.Context)
			}
			if d, ok := ev.Context["data"].(string); ok {
				if ev.Context["encoding"] == "base64" {
					sawBase64 = true
					raw, err := base64.StdEncoding.DecodeString(d)
					if err != nil {
						t.Errorf("base64 data %q: %v", d, err)
					}
					d = string(raw)
				}
				got[stream] += d
			}
			if v, ok := ev.Context["eof"]; ok {
				eof[stream] = v == true
			}
		case "redirect":
			// rank is an idset string: "0" for one task ("[0-3]" for four)
			stream, _ := ev.Context["stream"].(string)
			redirected = append(redirected, stream)
			if ev.Context["rank"] != "0" || ev.Context["path"] != "job.out" {
				t.Errorf("redirect entry %v; want rank \"0\", path job.out", ev.Context)
			}
		default:
			t.Errorf("unexpected entry %q: %v", ev.Name, ev.Context)
		}
	}
	if !slices.Equal(redirected, redirect) {
		t.Errorf("redirected streams %q; want %q", redirected, redirect)
	}
	if len(redirect) > 0 && len(got)+len(eof) > 0 {
		t.Errorf("data entries for redirected streams: %q, eof %v", got, eof)
	}
	if len(redirect) == 0 {
		if got["stdout"] != stdout || got["stderr"] != stderr {
			t.Errorf("stdout %q stderr %q; want %q and %q", got["stdout"], got["stderr"], stdout, stderr)
		}
		if !eof["stdout"] || !eof["stderr"] {
			t.Errorf("eof seen: %v; want both streams", eof)
		}
	}
	if b64 != sawBase64 {
		t.Errorf("base64-encoded data: %v; want %v", sawBase64, b64)
	}
	t.Logf("guest.output entries: %d; redirected %q; streams %q", len(evs), redirected, got)
}

// writeCapture writes one scenario's transcript, what the command printed
// and a readable view of every message.
func writeCapture(t *testing.T, dir, name string, lines []string, stdout string) {
	t.Helper()
	if err := writeLines(filepath.Join(dir, name+".jsonl"), lines); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".stdout.txt"), []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	s := loadTranscript(t, lines)
	var b strings.Builder
	for _, c := range s.Conns {
		fmt.Fprintf(&b, "conn %d accept byte %x\n", c.ID, c.Accept)
		for _, side := range []struct {
			dir  string
			msgs [][]byte
		}{{"c2b", c.Client}, {"b2c", c.Broker}} {
			for _, framed := range side.msgs {
				var m wire.Message
				if err := m.UnmarshalBinary(framed[wire.PrefixSize:]); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%d %s type=%s flags=%s topic=%s userid=0x%x rolemask=0x%x aux1=0x%x matchtag=%d payload=%s\n",
					c.ID, side.dir, m.Type, m.Flags, m.Topic, m.UserID, m.Rolemask, m.Aux1, m.Aux2, m.PayloadString())
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".decoded.txt"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
