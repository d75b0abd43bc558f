package job

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire/wiretest"
)

// TestOutputCaptures checks the output decoder against the bytes of a
// real flux-core 0.88 broker (testdata/output-*.jsonl, see
// testdata/README.md): our request is byte for byte the one flux job
// eventlog sent, every response decodes, the decoded events are the ones
// the flux command printed, the data bytes are the job's (UTF-8, base64,
// no trailing newline), and the stream ends with ENODATA. A missing
// transcript fails the test.
func TestOutputCaptures(t *testing.T) {
	scenarios, err := wiretest.Load("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		stdout    string
		stderr    string
		redirects []string
		eofs      int
	}{
		{"output-eventlog", "out1\nout2 no newline", "err1\n", nil, 2},
		{"output-eventlog-base64", "\xff\xfebin\n", "", nil, 2},
		{"output-eventlog-redirect", "", "", []string{"stdout job.out", "stderr job.out"}, 0},
	}
	byName := map[string]*wiretest.Scenario{}
	for _, s := range scenarios {
		byName[s.Name] = s
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := byName[tc.name]
			if s == nil {
				t.Fatalf("no transcript %s in testdata", tc.name)
			}
			req, resps := outputWatchExchange(t, s)
			var r struct {
				ID ID `json:"id"`
			}
			if err := req.DecodeJSON(&r); err != nil {
				t.Fatal(err)
			}
			if want := outputWatchPayload(r.ID, OutputOptions{}); !bytes.Equal(req.Payload, want) {
				t.Fatalf("request payload %q, ours %q", req.Payload, want)
			}
			printed := printedEvents(t, strings.TrimSuffix(s.Path, ".jsonl")+".stdout.txt")
			var stdout, stderr bytes.Buffer
			var redirects []string
			eofs := 0
			ended := false
			for i, m := range resps {
				if ended {
					t.Fatalf("response %d after the end", i)
				}
				if e := m.Errnum(); e != 0 {
					if syscall.Errno(e) != syscall.ENODATA {
						t.Fatalf("response %d: errno %d", i, e)
					}
					ended = true
					continue
				}
				ev, err := decodeOutputResponse(r.ID, bytes.TrimSuffix(m.Payload, []byte{0}))
				if err != nil {
					t.Fatalf("response %d (%q): %v", i, m.Payload, err)
				}
				if i >= len(printed) || describeOutput(ev) != describeOutput(printed[i]) {
					t.Fatalf("response %d decodes to %s; flux job eventlog printed %v", i, describeOutput(ev), printed)
				}
				switch {
				case i == 0 && ev.Header == nil:
					t.Fatalf("first event %s, want the header", ev.Name)
				case ev.Data != nil:
					if ev.Data.Stream == Stdout {
						stdout.Write(ev.Data.Data)
					} else {
						stderr.Write(ev.Data.Data)
					}
					if ev.Data.EOF {
						eofs++
					}
				case ev.Redirect != nil:
					redirects = append(redirects, ev.Redirect.Stream+" "+ev.Redirect.Path)
				}
			}
			if !ended {
				t.Fatal("the stream did not end with ENODATA")
			}
			if stdout.String() != tc.stdout || stderr.String() != tc.stderr || eofs != tc.eofs || strings.Join(redirects, ",") != strings.Join(tc.redirects, ",") {
				t.Fatalf("stdout %q stderr %q eofs %d redirects %q; want %q %q %d %q",
					stdout.String(), stderr.String(), eofs, redirects, tc.stdout, tc.stderr, tc.eofs, tc.redirects)
			}
		})
	}
}

// outputWatchExchange returns the guest.output watch request of a
// transcript and the broker's responses to it, in order.
func outputWatchExchange(t *testing.T, s *wiretest.Scenario) (*wire.Message, []*wire.Message) {
	t.Helper()
	for _, c := range s.Conns {
		reqs := readMessages(t, c.ClientStream)
		for _, req := range reqs {
			if req.Topic != topicEventlog || !strings.Contains(req.PayloadString(), `"guest.output"`) {
				continue
			}
			var resps []*wire.Message
			for _, m := range readMessages(t, c.BrokerStream) {
				if m.Type == wire.TypeResponse && m.Matchtag() == req.Matchtag() {
					resps = append(resps, m)
				}
			}
			return req, resps
		}
	}
	t.Fatalf("%s: no guest.output watch request", s.Name)
	return nil, nil
}

func readMessages(t *testing.T, stream []byte) []*wire.Message {
	t.Helper()
	r := wire.NewReader(bytes.NewReader(stream), wire.DefaultMaxSize)
	var out []*wire.Message
	for {
		m, err := r.ReadMessage()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

// printedEvents parses the eventlog lines flux job eventlog -f json
// printed (the lines of NAME.stdout.txt that are JSON objects).
func printedEvents(t *testing.T, path string) []OutputEvent {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	var out []OutputEvent
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		ev, err := ParseOutputEvent([]byte(line))
		if err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, ev)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no eventlog lines", path)
	}
	return out
}
