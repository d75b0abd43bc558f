package job

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// The Start forms send the same bytes as the waiting forms (checked
// against the captures) and deliver the same results through handlers.

func TestStartSubmit(t *testing.T) {
	fb := newFakeBroker(t, "submit")
	c := fb.dial(t)
	type result struct {
		id  ID
		err error
	}
	got := make(chan result, 2)
	err := StartSubmit(testCtx(t), c, readWire(t, "jobspec-true.json"), SubmitOptions{UserID: uid0}, func(id ID, err error) {
		got <- result{id, err}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.err != nil || r.id != 24779948032 {
		t.Fatalf("StartSubmit handler got %v, %v", r.id, r.err)
	}
	fb.checkRequest("job-ingest.submit", true)

	// refused at once: the handler is never called
	if err := StartSubmit(testCtx(t), c, []byte("{}"), SubmitOptions{Urgency: Urgency(32)}, func(ID, error) {
		t.Error("handler called for a refused submission")
	}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("urgency 32: %v", err)
	}
}

// collectEvents returns a handler for StartWatchEvents and a channel that
// gets the event names followed by the end.
func collectEvents() (func(Event, error), chan error, *[]string) {
	var names []string
	end := make(chan error, 2)
	return func(ev Event, err error) {
		if err != nil {
			end <- err
			return
		}
		names = append(names, ev.Name)
	}, end, &names
}

func TestStartWatchEvents(t *testing.T) {
	fb := newFakeBroker(t, "eventlog-watch")
	c := fb.dial(t)
	h, end, names := collectEvents()
	if _, err := StartWatchEvents(testCtx(t), c, 24779948032, WatchOptions{}, h); err != nil {
		t.Fatal(err)
	}
	if err := <-end; err != io.EOF { //nolint:errorlint // the end is io.EOF itself
		t.Fatalf("end = %v, want io.EOF", err)
	}
	want := "submit validate depend priority alloc start finish release free clean"
	if got := strings.Join(*names, " "); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	fb.checkRequest("job-info.eventlog-watch", true)
}

func TestStartWatchEventsErrors(t *testing.T) {
	tests := []struct {
		name      string
		responses func(req *wire.Message) []*wire.Message
		wantErr   func(error) bool
		wantNames string
		cancelled bool // the client cancels the watch (bad response)
	}{
		{
			name: "unknown job",
			responses: func(req *wire.Message) []*wire.Message {
				return []*wire.Message{wire.NewErrorResponse(req, uint32(syscall.ENOENT), "job not found")}
			},
			wantErr: func(err error) bool { return errors.Is(err, syscall.ENOENT) },
		},
		{
			name: "bad response after a good one",
			responses: func(req *wire.Message) []*wire.Message {
				good := wire.NewResponse(req, []byte(`{"event":"{\"timestamp\":1.5,\"name\":\"submit\",\"context\":{}}\n"}`+"\x00"))
				bad := wire.NewResponse(req, []byte(`{"nothing":1}`+"\x00"))
				after := wire.NewResponse(req, []byte(`{"event":"{\"timestamp\":2,\"name\":\"depend\"}\n"}`+"\x00"))
				return []*wire.Message{good, bad, after}
			},
			wantErr:   func(err error) bool { return errors.Is(err, syscall.EPROTO) },
			wantNames: "submit",
			cancelled: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := newFakeBroker(t)
			fb.setHandle(func(req *wire.Message) []*wire.Message {
				switch req.Topic {
				case "job-info.eventlog-watch":
					return tt.responses(req)
				case "probe":
					return []*wire.Message{wire.NewResponse(req, nil)}
				}
				return []*wire.Message{} // the cancel: no response
			})
			c := fb.dial(t)
			h, end, names := collectEvents()
			if _, err := StartWatchEvents(testCtx(t), c, 42, WatchOptions{}, h); err != nil {
				t.Fatal(err)
			}
			if err := <-end; !tt.wantErr(err) {
				t.Fatalf("end = %v", err)
			}
			if got := strings.Join(*names, " "); got != tt.wantNames {
				t.Fatalf("events %q, want %q", got, tt.wantNames)
			}
			if tt.cancelled {
				waitUntil(t, func() bool { return len(fb.requests("job-info.eventlog-watch-cancel")) == 1 })
			}
			// the handler is not called after its end, whatever follows
			// (a probe answered means the responses before it were read)
			if err := c.RPC(testCtx(t), "probe", nil, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-end:
				t.Fatalf("handler called after the end: %v", err)
			default:
			}
		})
	}
}

func TestStartJournal(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/i-events-journal")
	c := fb.dial(t)
	var entries []JournalEntry
	end := make(chan error, 1)
	_, err := StartJournal(testCtx(t), c, JournalOptions{Full: true}, func(e JournalEntry, err error) {
		if err != nil {
			end <- err
			return
		}
		entries = append(entries, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-end; err != io.EOF { //nolint:errorlint // the end is io.EOF itself
		t.Fatalf("end = %v", err)
	}
	// the same entries as WatchJournal reads from the same capture
	fb2 := newFakeBroker(t, "bin-hex/i-events-journal")
	w, err := WatchJournal(testCtx(t), fb2.dial(t), JournalOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; ; i++ {
		e, err := w.Next()
		if errors.Is(err, io.EOF) {
			if i != len(entries) {
				t.Fatalf("StartJournal delivered %d entries, WatchJournal %d", len(entries), i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(entries) || entries[i].ID != e.ID || len(entries[i].Events) != len(e.Events) || entries[i].Sentinel != e.Sentinel {
			t.Fatalf("entry %d differs", i)
		}
	}
	fb.checkRequest("job-manager.events-journal", false)
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
