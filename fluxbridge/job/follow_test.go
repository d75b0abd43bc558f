package job

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// scriptedBroker answers requests the way a test says, at the time it
// says: the fake broker hands each request to the test (reqs) and sends
// what the test gives to send.
type scriptedBroker struct {
	fb   *fakeBroker
	reqs chan *wire.Message
	mu   sync.Mutex // one writer at a time
}

func newScriptedBroker(t *testing.T) *scriptedBroker {
	t.Helper()
	sb := &scriptedBroker{fb: newFakeBroker(t), reqs: make(chan *wire.Message, 64)}
	sb.fb.setHandle(func(req *wire.Message) []*wire.Message {
		sb.reqs <- req
		return []*wire.Message{} // answered by the script
	})
	return sb
}

func (sb *scriptedBroker) send(t *testing.T, ms ...*wire.Message) {
	t.Helper()
	sb.fb.mu.Lock()
	nc := sb.fb.conns[0]
	sb.fb.mu.Unlock()
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for _, m := range ms {
		if err := wire.WriteMessage(nc, m); err != nil {
			t.Error(err)
		}
	}
}

// next returns the next request that is not a cancel (a cancel of a
// watch gets the watch's ENODATA, as job-info answers it). It runs on a
// script goroutine, which it ends on failure.
func (sb *scriptedBroker) next(t *testing.T, ctx context.Context, watches map[uint32]*wire.Message) *wire.Message {
	t.Helper()
	for {
		select {
		case m := <-sb.reqs:
			if m.Topic == "job-info.eventlog-watch-cancel" {
				var p struct {
					Matchtag uint32 `json:"matchtag"`
				}
				if err := m.DecodeJSON(&p); err != nil {
					t.Error(err)
					runtime.Goexit()
				}
				if w := watches[p.Matchtag]; w != nil {
					sb.send(t, wire.NewErrorResponse(w, uint32(syscall.ENODATA), ""))
				}
				continue
			}
			watches[m.Matchtag()] = m
			return m
		case <-ctx.Done():
			// next runs on the script's goroutine: end it, not the test
			t.Errorf("waiting for a request: %v", ctx.Err())
			runtime.Goexit()
		}
	}
}

func outputEntry(t *testing.T, name string, ctx map[string]any) []byte {
	t.Helper()
	line, err := json.Marshal(map[string]any{"timestamp": 1.5, "name": name, "context": ctx})
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(map[string]string{"event": string(line)})
	if err != nil {
		t.Fatal(err)
	}
	return append(p, 0)
}

// TestFollowOutput: the output watch that never ends (flux-core 0.88's
// job-info when it starts in the gap before "release") is started again
// once the main eventlog ends, and h gets each entry once; a watch that
// ends by itself, the sentinel and errors end FollowOutput at once.
func TestFollowOutput(t *testing.T) {
	header := func(t *testing.T) []byte {
		return outputEntry(t, "header", map[string]any{"version": 1, "encoding": map[string]string{"stdout": "UTF-8", "stderr": "UTF-8"},
			"count": map[string]int{"stdout": 1, "stderr": 1}, "options": map[string]any{}})
	}
	data := func(t *testing.T, s string) []byte {
		return outputEntry(t, "data", map[string]any{"stream": "stdout", "rank": "0", "data": s})
	}
	enodata := func(req *wire.Message) *wire.Message { return wire.NewErrorResponse(req, uint32(syscall.ENODATA), "") }
	tests := []struct {
		name     string
		sentinel bool
		// script answers the requests (main eventlog and output watches,
		// in the order FollowOutput sends them); seen is closed when h
		// has had n entries.
		script  func(t *testing.T, sb *scriptedBroker, next func() *wire.Message, seen func(n int) <-chan struct{})
		want    []string // data h got
		wantErr string
	}{
		{name: "hung watch restarted after clean", script: func(t *testing.T, sb *scriptedBroker, next func() *wire.Message, seen func(int) <-chan struct{}) {
			main, out := next(), next()
			sb.send(t, wire.NewResponse(out, header(t)), wire.NewResponse(out, data(t, "a")))
			<-seen(2)
			// the job is inactive; the output watch is silent for ever
			sb.send(t, enodata(main))
			again := next()
			sb.send(t, wire.NewResponse(again, header(t)), wire.NewResponse(again, data(t, "a")), wire.NewResponse(again, data(t, "b")), enodata(again))
		}, want: []string{"header", "a", "b"}},
		{name: "watch ends by itself", script: func(t *testing.T, sb *scriptedBroker, next func() *wire.Message, _ func(int) <-chan struct{}) {
			_, out := next(), next()
			sb.send(t, wire.NewResponse(out, header(t)), wire.NewResponse(out, data(t, "a")), enodata(out))
		}, want: []string{"header", "a"}},
		{name: "sentinel", sentinel: true, script: func(t *testing.T, sb *scriptedBroker, next func() *wire.Message, _ func(int) <-chan struct{}) {
			_, out := next(), next()
			sb.send(t, wire.NewResponse(out, header(t)), wire.NewResponse(out, nil), wire.NewResponse(out, data(t, "late")))
		}, want: []string{"header"}},
		{name: "unknown job", script: func(t *testing.T, sb *scriptedBroker, next func() *wire.Message, _ func(int) <-chan struct{}) {
			main, out := next(), next()
			sb.send(t, wire.NewErrorResponse(out, uint32(syscall.ENOENT), "job not found"), wire.NewErrorResponse(main, uint32(syscall.ENOENT), "job not found"))
		}, wantErr: "job not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sb := newScriptedBroker(t)
			c := sb.fb.dial(t)
			var (
				mu    sync.Mutex
				got   []string
				waits = map[int]chan struct{}{}
			)
			seen := func(n int) <-chan struct{} {
				mu.Lock()
				defer mu.Unlock()
				ch := make(chan struct{})
				if len(got) >= n {
					close(ch)
				} else {
					waits[n] = ch
				}
				return ch
			}
			watches := map[uint32]*wire.Message{}
			scripted := make(chan struct{})
			go func() {
				defer close(scripted)
				tc.script(t, sb, func() *wire.Message { return sb.next(t, ctx, watches) }, seen)
			}()
			err := FollowOutput(ctx, c, 42, OutputOptions{Sentinel: tc.sentinel}, func(ev OutputEvent) error {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case ev.Header != nil:
					got = append(got, "header")
				case ev.Data != nil:
					got = append(got, string(ev.Data.Data))
				}
				if ch := waits[len(got)]; ch != nil {
					close(ch)
					delete(waits, len(got))
				}
				return nil
			})
			<-scripted
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestFollowOutputHandlerError: h's error ends FollowOutput and is
// returned.
func TestFollowOutputHandlerError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sb := newScriptedBroker(t)
	c := sb.fb.dial(t)
	watches := map[uint32]*wire.Message{}
	go func() {
		_, out := sb.next(t, ctx, watches), sb.next(t, ctx, watches)
		sb.send(t, wire.NewResponse(out, outputEntry(t, "data", map[string]any{"stream": "stdout", "rank": "0", "data": "x"})))
	}()
	stop := errors.New("stop")
	if err := FollowOutput(ctx, c, 42, OutputOptions{}, func(OutputEvent) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("error %v, want %v", err, stop)
	}
}
