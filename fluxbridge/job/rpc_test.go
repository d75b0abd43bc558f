package job

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

var uid0 = func() *uint32 { var u uint32; return &u }()

// The transcripts were recorded as root (uid 0): the jobspec is wrapped
// exactly as flux-core's sign_none_wrap did, byte for byte.
func TestSignNoneMatchesFluxCore(t *testing.T) {
	rec := decodeFramed(t, scenario(t, "submit").Conns[0].Client[0])
	var req struct{ J string }
	if err := rec.DecodeJSON(&req); err != nil {
		t.Fatal(err)
	}
	if got := SignNone(readWire(t, "jobspec-true.json"), 0); got != req.J {
		t.Fatalf("SignNone:\n got %s\nwant %s", got, req.J)
	}
	rec = decodeFramed(t, scenario(t, "submit-invalid").Conns[0].Client[0])
	if err := rec.DecodeJSON(&req); err != nil {
		t.Fatal(err)
	}
	if got := SignNone([]byte("{\"version\": 1}\n"), 0); got != req.J {
		t.Fatalf("SignNone:\n got %s\nwant %s", got, req.J)
	}
	if got := SignNone(nil, 4294967295); !strings.HasPrefix(got, "dmVyc2lvbgBpMQB1c2VyaWQAaTQyOTQ5NjcyOTUAbWVjaGFuaXNtAHNub25lAA==.") || !strings.HasSuffix(got, "..none") {
		t.Fatalf("SignNone(nil, max uid) = %s", got)
	}
}

func TestSubmit(t *testing.T) {
	fb := newFakeBroker(t, "submit")
	c := fb.dial(t)
	id, err := Submit(testCtx(t), c, readWire(t, "jobspec-true.json"), SubmitOptions{UserID: uid0})
	if err != nil || id != 24779948032 {
		t.Fatalf("Submit = %v, %v", id, err)
	}
	fb.checkRequest("job-ingest.submit", true)
}

func TestSubmitUrgencyWaitable(t *testing.T) {
	fb := newFakeBroker(t, "submit-urgency-waitable")
	c := fb.dial(t)
	id, err := Submit(testCtx(t), c, readWire(t, "jobspec-true.json"), SubmitOptions{UserID: uid0, Urgency: Urgency(20), Waitable: true})
	if err != nil || id != 82174803968 {
		t.Fatalf("Submit = %v, %v", id, err)
	}
	fb.checkRequest("job-ingest.submit", true)
}

func TestSubmitInvalidJobspec(t *testing.T) {
	fb := newFakeBroker(t, "submit-invalid")
	c := fb.dial(t)
	_, err := Submit(testCtx(t), c, []byte("{\"version\": 1}\n"), SubmitOptions{UserID: uid0})
	fluxError(t, err, syscall.EPERM, "Missing key (tasks)")
	fb.checkRequest("job-ingest.submit", true)
}

func TestSubmitFlagsAndPreSigned(t *testing.T) {
	fb := newFakeBroker(t)
	var got []byte
	fb.handle = func(req *wire.Message) []*wire.Message {
		got = append([]byte(nil), req.Payload...)
		p, _ := wire.JSONPayload(map[string]any{"id": 7})
		return []*wire.Message{wire.NewResponse(req, p)}
	}
	c := fb.dial(t)
	id, err := Submit(testCtx(t), c, []byte("x.y.none"), SubmitOptions{PreSigned: true, Debug: true, NoValidate: true, Urgency: Urgency(0)})
	if err != nil || id != 7 {
		t.Fatalf("Submit = %v, %v", id, err)
	}
	if want := "{\"J\":\"x.y.none\",\"urgency\":0,\"flags\":10}\x00"; string(got) != want {
		t.Fatalf("request %q, want %q", got, want)
	}
	for _, u := range []int{-1, 32} {
		if _, err := Submit(testCtx(t), c, nil, SubmitOptions{Urgency: Urgency(u)}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("urgency %d: %v, want EINVAL", u, err)
		}
	}
}

func TestWatchEvents(t *testing.T) {
	fb := newFakeBroker(t, "eventlog-watch")
	c := fb.dial(t)
	w, err := WatchEvents(testCtx(t), c, 24779948032, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var names []string
	for {
		ev, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, ev.Name)
		if ev.Name == "finish" {
			if fin, err := ev.Finish(); err != nil || fin.Status != 0 {
				t.Errorf("finish = %+v, %v", fin, err)
			}
		}
	}
	want := "submit validate depend priority alloc start finish release free clean"
	if strings.Join(names, " ") != want {
		t.Fatalf("events %v, want %s", names, want)
	}
	if _, err := w.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after the end: %v", err)
	}
	fb.checkRequest("job-info.eventlog-watch", true)
}

func TestWatchEventsOptionsAndErrors(t *testing.T) {
	fb := newFakeBroker(t)
	var payload string
	fb.handle = func(req *wire.Message) []*wire.Message {
		if req.Topic != "job-info.eventlog-watch" {
			return []*wire.Message{}
		}
		payload = req.PayloadString()
		return []*wire.Message{wire.NewErrorResponse(req, uint32(syscall.ENOENT), "job not found")}
	}
	c := fb.dial(t)
	w, err := WatchEvents(testCtx(t), c, 123456789, WatchOptions{Path: "guest.exec.eventlog", WaitCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = w.Next()
	fluxError(t, err, syscall.ENOENT, "job not found")
	if want := `{"id":123456789,"path":"guest.exec.eventlog","flags":1}`; payload != want {
		t.Fatalf("request %s, want %s", payload, want)
	}
}

func TestCancel(t *testing.T) {
	fb := newFakeBroker(t, "cancel")
	c := fb.dial(t)
	if err := Cancel(testCtx(t), c, 131768254464, ""); err != nil {
		t.Fatal(err)
	}
	fb.checkRequest("job-manager.raise", true)
}

func TestCancelInactive(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/d5-cancel-inactive-error")
	c := fb.dial(t)
	rec := decodeFramed(t, scenario(t, "bin-hex/d5-cancel-inactive-error").Conns[0].Client[0])
	var req struct{ ID ID }
	if err := rec.DecodeJSON(&req); err != nil {
		t.Fatal(err)
	}
	err := Cancel(testCtx(t), c, req.ID, "")
	fluxError(t, err, syscall.ENOENT, "job is inactive")
	fb.checkRequest("job-manager.raise", true)
}

func TestRaise(t *testing.T) {
	fb := newFakeBroker(t, "raise")
	c := fb.dial(t)
	if err := Raise(testCtx(t), c, 131768254464, "test", 1, "a note"); err != nil {
		t.Fatal(err)
	}
	fb.checkRequest("job-manager.raise", true)
}

func TestKill(t *testing.T) {
	fb := newFakeBroker(t, "kill")
	c := fb.dial(t)
	if err := Kill(testCtx(t), c, 102139691008, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	fb.checkRequest("job-manager.kill", true)
}

func TestSetUrgency(t *testing.T) {
	fb := newFakeBroker(t, "urgency-pending")
	c := fb.dial(t)
	old, err := SetUrgency(testCtx(t), c, 163997286400, 16)
	if err != nil || old != 0 {
		t.Fatalf("SetUrgency = %d, %v", old, err)
	}
	fb.checkRequest("job-manager.urgency", true)
	if _, err := SetUrgency(testCtx(t), c, 1, 32); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("urgency 32: %v", err)
	}
}

func TestSetUrgencyRunning(t *testing.T) {
	fb := newFakeBroker(t, "urgency")
	c := fb.dial(t)
	_, err := SetUrgency(testCtx(t), c, 102139691008, 5)
	fluxError(t, err, syscall.EINVAL, "urgency cannot be changed once resources are allocated")
	fb.checkRequest("job-manager.urgency", true)
}

func TestWait(t *testing.T) {
	fb := newFakeBroker(t, "wait")
	c := fb.dial(t)
	res, err := Wait(testCtx(t), c, 82174803968)
	if err != nil || res != (WaitResult{ID: 82174803968, Success: true}) {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	fb.checkRequest("job-manager.wait", true)
}

func TestWaitAnyNone(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/h-submit-waitable-wait")
	c := fb.dial(t)
	// The transcript's first wait is for a job ID; consume it first.
	if _, err := Wait(testCtx(t), c, 208691789824); err != nil {
		t.Fatal(err)
	}
	_, err := WaitAny(testCtx(t), c)
	fluxError(t, err, syscall.ECHILD, "there are no more waitable jobs")
	reqs := fb.requests("job-manager.wait")
	if len(reqs) != 2 || reqs[1].got.PayloadString() != `{"id":-1}` || reqs[1].recorded.PayloadString() != `{"id":-1}` {
		t.Fatalf("wait requests %+v", reqs)
	}
}

func TestList(t *testing.T) {
	fb := newFakeBroker(t, "list")
	c := fb.dial(t)
	jobs, err := List(testCtx(t), c, ListOptions{
		MaxEntries: 1001,
		Attrs:      []string{"name", "state", "result", "waitstatus"},
		Constraint: And(UserID(0), States(StateAll)),
	})
	if err != nil {
		t.Fatal(err)
	}
	fb.checkRequest("job-list.list", false)
	if len(jobs) != 5 {
		t.Fatalf("got %d jobs, want 5", len(jobs))
	}
	j := jobs[1]
	if j.ID != 131768254464 || j.Name != "sleep" || j.State != StateInactive || j.Result != ResultCanceled ||
		j.WaitStatus == nil || *j.WaitStatus != 36608 || j.WaitStatus.Result() != 143 || j.All["waitstatus"] != 36608.0 {
		t.Fatalf("job %+v", j)
	}
	if jobs[0].Result.String() != "COMPLETED" || jobs[2].Result.String() != "FAILED" || j.State.String() != "INACTIVE" {
		t.Fatalf("results %v %v state %v", jobs[0].Result, jobs[2].Result, j.State)
	}
}

func TestListRequestShape(t *testing.T) {
	fb := newFakeBroker(t)
	var payload string
	fb.handle = func(req *wire.Message) []*wire.Message {
		if req.Topic == "job-list.list" {
			payload = req.PayloadString()
			return []*wire.Message{wire.NewErrorResponse(req, uint32(syscall.ENODATA), "")}
		}
		return []*wire.Message{}
	}
	c := fb.dial(t)
	jobs, err := List(testCtx(t), c, ListOptions{Constraint: And(Name("sleep", "true"), Not(Results(ResultFailed|ResultTimeout))), Since: 1.5})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("List = %v, %v", jobs, err)
	}
	want := `{"max_entries":0,"attrs":["all"],"since":1.5,"constraint":{"and":[{"name":["sleep","true"]},{"not":[{"results":[10]}]}]}}`
	if payload != want {
		t.Fatalf("request %s\nwant %s", payload, want)
	}
	if _, err := List(testCtx(t), c, ListOptions{MaxEntries: -1}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("MaxEntries -1: %v", err)
	}
}

func TestListID(t *testing.T) {
	fb := newFakeBroker(t, "list-id")
	c := fb.dial(t)
	attrs := []string{"priority", "dependencies", "duration", "t_cleanup", "userid", "result", "t_run", "state", "name", "annotations", "nodelist", "ntasks", "queue", "urgency", "nnodes"}
	j, err := ListID(testCtx(t), c, 131768254464, attrs...)
	if err != nil {
		t.Fatal(err)
	}
	fb.checkRequest("job-list.list-id", false)
	if j.ID != 131768254464 || j.Name != "sleep" || j.State != StateInactive || j.Nodelist != "vm" || j.Ntasks != 1 ||
		j.Priority != 16 || j.TRun != 1795576038.8440154 || j.All["nnodes"] != 1.0 {
		t.Fatalf("job %+v", j)
	}
}

func TestListIDUnknown(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/e3-jobs-list-id-nonexistent")
	c := fb.dial(t)
	_, err := ListID(testCtx(t), c, 123456789, "state")
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("ListID of an unknown job: %v", err)
	}
}

func TestWatchJournal(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/i-events-journal")
	c := fb.dial(t)
	w, err := WatchJournal(testCtx(t), c, JournalOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var backlog, live, sentinels int
	var sawJobspec, sawR bool
	for {
		e, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Sentinel:
			sentinels++
		case sentinels == 0:
			backlog++
			if len(e.Events) < 2 || e.Events[0].Name != "submit" {
				t.Errorf("backlog entry %+v", e)
			}
		default:
			live++
			if len(e.Events) != 1 || e.ID != 219932524544 {
				t.Errorf("live entry %+v", e)
			}
			if e.Jobspec != nil {
				sawJobspec = e.Events[0].Name == "submit"
			}
			if e.R != nil {
				sawR = e.Events[0].Name == "alloc"
			}
		}
	}
	if sentinels != 1 || backlog == 0 || live < 10 || !sawJobspec || !sawR {
		t.Fatalf("backlog %d sentinels %d live %d jobspec %v R %v", backlog, sentinels, live, sawJobspec, sawR)
	}
	fb.checkRequest("job-manager.events-journal", false)
}

func TestJournalFilters(t *testing.T) {
	fb := newFakeBroker(t)
	var payload string
	fb.handle = func(req *wire.Message) []*wire.Message {
		if req.Topic == "job-manager.events-journal" {
			payload = req.PayloadString()
			p, _ := wire.JSONPayload(map[string]any{"events": []any{}})
			return []*wire.Message{wire.NewResponse(req, p), wire.NewErrorResponse(req, uint32(syscall.ENODATA), "")}
		}
		return []*wire.Message{}
	}
	c := fb.dial(t)
	w, err := WatchJournal(testCtx(t), c, JournalOptions{Allow: []string{"finish", "exception"}, Deny: []string{"alloc"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Next(); !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("entry without an id: %v", err)
	}
	var req map[string]any
	if err := json.Unmarshal([]byte(payload), &req); err != nil {
		t.Fatal(err)
	}
	if jsonOf(t, req) != `{"allow":{"exception":true,"finish":true},"deny":{"alloc":true},"full":false}` {
		t.Fatalf("request %s", payload)
	}
}

// Ending a watch's context cancels it at the service, as flux-core's
// clients do: job-info.eventlog-watch-cancel {"matchtag": M}, no response.
func TestWatchEventsContextCancel(t *testing.T) {
	fb := newFakeBroker(t)
	cancelled := make(chan *wire.Message, 1)
	var watchTag uint32
	fb.handle = func(req *wire.Message) []*wire.Message {
		switch req.Topic {
		case "job-info.eventlog-watch":
			watchTag = req.Aux2
			p, _ := wire.JSONPayload(map[string]string{"event": `{"timestamp":1.5,"name":"submit","context":{"userid":0,"urgency":16,"flags":0,"version":1}}` + "\n"})
			return []*wire.Message{wire.NewResponse(req, p)}
		case "job-info.eventlog-watch-cancel":
			cancelled <- req
		}
		return []*wire.Message{}
	}
	c := fb.dial(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	w, err := WatchEvents(ctx, c, 42, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ev, err := w.Next()
	if err != nil || ev.Name != "submit" || ev.Timestamp != 1.5 {
		t.Fatalf("Next = %+v, %v", ev, err)
	}
	cancel()
	select {
	case req := <-cancelled:
		want := fmt.Sprintf(`{"matchtag":%d}`, watchTag)
		if req.PayloadString() != want || req.Flags&wire.FlagNoResponse == 0 {
			t.Fatalf("cancel request %v, want payload %s with NORESPONSE", req, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no cancel request after the context ended")
	}
	if _, err := w.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", err)
	}
}

func TestSubmitNotJSON(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/f2-submit-not-json")
	c := fb.dial(t)
	_, err := Submit(testCtx(t), c, []byte("this is not json\n"), SubmitOptions{UserID: uid0})
	fluxError(t, err, syscall.EINVAL, "jobspec: invalid JSON")
	fb.checkRequest("job-ingest.submit", true)
}

func TestSubmitBadSignature(t *testing.T) {
	fb := newFakeBroker(t, "bin-hex/f3-raw-rpc-errors")
	c := fb.dial(t)
	_, err := Submit(testCtx(t), c, []byte("garbage"), SubmitOptions{PreSigned: true})
	fluxError(t, err, syscall.EINVAL, "could not unwrap jobspec: Invalid argument")
	reqs := fb.requests("job-ingest.submit")
	if len(reqs) != 1 || reqs[0].recorded == nil {
		t.Fatalf("requests %+v", reqs)
	}
	var got, want map[string]any
	if err := reqs[0].got.DecodeJSON(&got); err != nil {
		t.Fatal(err)
	}
	if err := reqs[0].recorded.DecodeJSON(&want); err != nil {
		t.Fatal(err)
	}
	if jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("request %s, recorded %s", jsonOf(t, got), jsonOf(t, want))
	}
}

func TestJSONFloat(t *testing.T) {
	for v, want := range map[float64]string{0: "0.0", 1.5: "1.5", 1795576040.3546662: "1795576040.3546662", 3: "3.0", 1e20: "1e+20"} {
		if got := jsonOf(t, jsonFloat(v)); got != want {
			t.Errorf("jsonFloat(%v) = %s, want %s", v, got, want)
		}
	}
}

// The client side of flux-core's Python FluxExecutor run
// (../shared/flux-wire/python-executor.*): three jobs submitted at once
// on one connection, then their eventlogs watched at the same time. Every
// request must be what the Python executor sent, byte for byte.
func TestPythonExecutorScenario(t *testing.T) {
	const name = "python-executor"
	fb := newFakeBroker(t, name)
	c := fb.dial(t)
	type job struct {
		spec    []byte
		urgency int
		id      ID
		events  []Event
		err     error
	}
	var jobs []*job
	for _, b := range scenario(t, name).Conns[0].Client {
		m := decodeFramed(t, b)
		if m.Topic != "job-ingest.submit" {
			continue
		}
		var req submitRequest
		if err := m.DecodeJSON(&req); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(req.J, ".")
		spec, err := base64.StdEncoding.DecodeString(parts[1])
		if err != nil || len(parts) != 3 || req.Flags != 0 {
			t.Fatalf("recorded J %q: %v", req.J, err)
		}
		jobs = append(jobs, &job{spec: spec, urgency: req.Urgency})
	}
	if len(jobs) != 3 {
		t.Fatalf("%d recorded submits, want 3", len(jobs))
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.id, j.err = Submit(ctx, c, j.spec, SubmitOptions{UserID: uid0, Urgency: Urgency(j.urgency)})
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		if j.err != nil {
			t.Fatal(j.err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := WatchEvents(ctx, c, j.id, WatchOptions{})
			if err != nil {
				j.err = err
				return
			}
			defer w.Close()
			for {
				ev, err := w.Next()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						j.err = err
					}
					return
				}
				j.events = append(j.events, ev)
			}
		}()
	}
	wg.Wait()
	want := map[ID]WaitStatus{229210324992: 0, 229260656640: 256, 229260656641: 32512}
	for _, j := range jobs {
		if j.err != nil {
			t.Fatalf("job %s: %v", j.id, j.err)
		}
		status, ok := want[j.id]
		if !ok || len(j.events) == 0 || j.events[len(j.events)-1].Name != "clean" {
			t.Fatalf("job %s: events %v", j.id, j.events)
		}
		var fin *FinishContext
		var fatal *ExceptionContext
		for _, ev := range j.events {
			switch ev.Name {
			case "finish":
				f, err := ev.Finish()
				if err != nil {
					t.Fatal(err)
				}
				fin = &f
			case "exception":
				x, err := ev.Exception()
				if err != nil {
					t.Fatal(err)
				}
				fatal = &x
			case "submit":
				s, err := ev.Submit()
				if err != nil || s.Urgency != j.urgency {
					t.Errorf("job %s: submit context %+v, %v; want urgency %d", j.id, s, err, j.urgency)
				}
			}
		}
		if fin == nil || fin.Status != status {
			t.Errorf("job %s: finish %+v, want status %d", j.id, fin, status)
		}
		if (status == 32512) != (fatal != nil && fatal.Type == "exec" && fatal.Severity == 0) {
			t.Errorf("job %s: exception %+v", j.id, fatal)
		}
	}
	for _, r := range fb.requests("job-ingest.submit") {
		if r.recorded == nil || !bytes.Equal(r.got.Payload, r.recorded.Payload) {
			t.Errorf("submit request %q differs from the recorded one", r.got.Payload)
		}
	}
	for _, r := range fb.requests("job-info.eventlog-watch") {
		if r.recorded == nil || !bytes.Equal(r.got.Payload, r.recorded.Payload) || r.got.Flags != r.recorded.Flags {
			t.Errorf("eventlog-watch request %v differs from the recorded one", r.got)
		}
	}
}

func TestRaiseLocalChecks(t *testing.T) {
	fb := newFakeBroker(t)
	c := fb.dial(t)
	for _, tc := range []struct {
		typ string
		sev int
	}{{"test", -1}, {"test", 8}, {"", 0}, {"a b", 0}, {"a=b", 1}, {"a\tb", 1}} {
		if err := Raise(testCtx(t), c, 1, tc.typ, tc.sev, ""); !errors.Is(err, syscall.EPROTO) {
			t.Errorf("Raise(type %q, severity %d) = %v, want EPROTO", tc.typ, tc.sev, err)
		}
	}
	if n := len(fb.requests("job-manager.raise")); n != 0 {
		t.Fatalf("%d requests sent for invalid exceptions", n)
	}
}

func TestSubmitJobspec(t *testing.T) {
	fb := newFakeBroker(t)
	var j string
	fb.handle = func(req *wire.Message) []*wire.Message {
		var r submitRequest
		if err := req.DecodeJSON(&r); err != nil {
			return []*wire.Message{wire.NewErrorResponse(req, uint32(syscall.EPROTO), err.Error())}
		}
		j = r.J
		p, _ := wire.JSONPayload(map[string]any{"id": 99})
		return []*wire.Message{wire.NewResponse(req, p)}
	}
	c := fb.dial(t)
	js, err := FromCommand([]string{"hostname"}, CommandOptions{NumTasks: 2, Name: "hn"})
	if err != nil {
		t.Fatal(err)
	}
	var uid uint32 = 1000
	id, err := SubmitJobspec(testCtx(t), c, js, SubmitOptions{UserID: &uid})
	if err != nil || id != 99 {
		t.Fatalf("SubmitJobspec = %v, %v", id, err)
	}
	body, _ := json.Marshal(js)
	if want := SignNone(body, 1000); j != want {
		t.Fatalf("J %s\nwant %s", j, want)
	}
	parts := strings.Split(j, ".")
	spec, _ := base64.StdEncoding.DecodeString(parts[1])
	back, err := Parse(spec)
	if err != nil || back.JobName() != "hn" || back.Resources[0].Count != 2 {
		t.Fatalf("signed jobspec %s: %v", spec, err)
	}
}

// TestNextBrokerHangUp: a broker that hangs up in the middle of a watch is
// reported as flux.ErrDisconnected by EventWatch.Next and JournalWatch.Next,
// not as io.EOF (the normal end, which only the service's ENODATA means);
// a Conn closed by us as flux.ErrClosed.
func TestNextBrokerHangUp(t *testing.T) {
	tests := []struct {
		name    string
		journal bool
		hangUp  bool // the broker goes away; else the client closes the Conn
		want    error
	}{
		{"eventlog broker gone", false, true, flux.ErrDisconnected},
		{"journal broker gone", true, true, flux.ErrDisconnected},
		{"eventlog conn closed", false, false, flux.ErrClosed},
		{"journal conn closed", true, false, flux.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := newFakeBroker(t)
			fb.handle = func(req *wire.Message) []*wire.Message {
				switch req.Topic {
				case "job-info.eventlog-watch":
					p, _ := wire.JSONPayload(map[string]string{"event": `{"timestamp":1.5,"name":"submit","context":{"userid":0,"urgency":16,"flags":0,"version":1}}` + "\n"})
					return []*wire.Message{wire.NewResponse(req, p)}
				case "job-manager.events-journal":
					p, _ := wire.JSONPayload(map[string]any{"id": -1, "events": []any{}})
					return []*wire.Message{wire.NewResponse(req, p)}
				}
				return []*wire.Message{}
			}
			c := fb.dial(t)
			var next func() error
			if tt.journal {
				w, err := WatchJournal(testCtx(t), c, JournalOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				next = func() error { _, err := w.Next(); return err }
			} else {
				w, err := WatchEvents(testCtx(t), c, 42, WatchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				next = func() error { _, err := w.Next(); return err }
			}
			if err := next(); err != nil {
				t.Fatalf("first Next: %v", err)
			}
			if tt.hangUp {
				fb.close()
			} else {
				_ = c.Close()
			}
			err := next()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Next after hang-up = %v, want %v", err, tt.want)
			}
			if err == io.EOF { //nolint:errorlint // the bare sentinel is what must not come back
				t.Fatal("Next returned the normal end of stream")
			}
		})
	}
}

// TestSubmitPayloadMatchesEncodingJSON: the hand-built submit request is
// byte for byte what encoding/json wrote, for signed and odd pre-signed J.
func TestSubmitPayloadMatchesEncodingJSON(t *testing.T) {
	for _, r := range []submitRequest{
		{J: SignNone([]byte(`{"version":1}`), 1000), Urgency: 16},
		{J: "pre\"signed\\ <&> \n\t\x01 é \u2028", Urgency: 0, Flags: flagWaitable | flagDebug},
		{J: "", Urgency: 31, Flags: -1},
	} {
		want, err := wire.JSONPayload(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.appendPayload(nil); string(got) != string(want) {
			t.Errorf("appendPayload = %q, encoding/json %q", got, want)
		}
	}
}

func TestScanIDResponse(t *testing.T) {
	for _, tt := range []struct {
		in string
		id ID
		ok bool
	}{
		{`{"id":24779948032}`, 24779948032, true},
		{`{"id":0}`, 0, true},
		{`{"id":18446744073709551615}`, 0, false}, // left to encoding/json
		{`{"id":01}`, 0, false},
		{`{"id":-1}`, 0, false},
		{`{"id":"ƒ2"}`, 0, false},
		{`{"id":}`, 0, false},
		{`{"id":1,"x":2}`, 0, false},
		{` {"id":1}`, 0, false},
	} {
		id, ok := scanIDResponse([]byte(tt.in))
		if id != tt.id || ok != tt.ok {
			t.Errorf("scanIDResponse(%s) = %v, %v; want %v, %v", tt.in, id, ok, tt.id, tt.ok)
		}
	}
}
