package job

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/munge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// Service topics (flux-core v0.88.0 src/modules/...).
const (
	topicSubmit          = "job-ingest.submit"
	topicEventlog        = "job-info.eventlog-watch"
	topicRaise           = "job-manager.raise"
	topicKill            = "job-manager.kill"
	topicUrgency         = "job-manager.urgency"
	topicWait            = "job-manager.wait"
	topicJournal         = "job-manager.events-journal"
	topicList            = "job-list.list"
	topicListID          = "job-list.list-id"
	defaultEventlog      = "eventlog"
	eventWatchWaitCreate = 1 // FLUX_JOB_EVENT_WATCH_WAITCREATE, src/common/libjob/job.h
	// FLUX_JOB_EVENT_WATCH_INITIAL_SENTINEL: an empty response after the
	// entries that exist when the watch starts
	eventWatchInitialSentinel = 2
)

// Urgency values (flux-core src/common/libjob/job.h).
const (
	UrgencyHold     = 0  // held: never scheduled until the urgency is raised
	UrgencyMin      = 0  // lowest urgency
	UrgencyDefault  = 16 // what a submission without an urgency gets
	UrgencyMax      = 31 // highest urgency
	UrgencyExpedite = 31 // scheduled ahead of every other job
)

// Submit flags on the wire (src/common/libjob/job.h). FLUX_JOB_PRE_SIGNED
// (1) is client-side only: job-ingest refuses it ("invalid job flags").
const (
	flagDebug      = 2
	flagWaitable   = 4
	flagNoValidate = 8
)

// SubmitOptions are the options of Submit, as flux_job_submit takes them.
type SubmitOptions struct {
	// Urgency is 0 (held) to 31 (expedite); nil means UrgencyDefault.
	// Above 16 needs the instance owner.
	Urgency *int
	// Waitable lets Wait collect the job's result (instance owner only).
	Waitable bool
	// Debug asks the job manager for debug events.
	Debug bool
	// NoValidate skips the job-ingest validator (instance owner only).
	NoValidate bool
	// PreSigned says the spec given to Submit is already a signed J;
	// otherwise it is a jobspec, wrapped by Signer, else with SignNone.
	PreSigned bool
	// UserID is the signer claimed by the "none" signature when Signer is
	// nil; nil means the process's uid. job-ingest refuses a signer other
	// than the connection's user ("signer=X != requestor=Y").
	UserID *uint32
	// Signer, when set, wraps the jobspec into the signed J: a guest of a
	// multi-user instance needs one whose mechanism the instance accepts
	// from guests (sign.Munge, made for a Conn by MungeSigner); the owner
	// may use sign.None. Submit and StartSubmit call it with their ctx;
	// its failure is the submission's error.
	Signer sign.Signer
}

// MungeSigner returns a Signer that signs with munge as the user c is at
// its broker: the credential comes from the munged of the broker's host,
// at socket (empty: munge.DefaultSocket), reached through
// c.DialHostSocket — here for local://, through the SSH connection for
// ssh://, so that munged vouches for the SSH user. The uid the envelope
// claims is learned from munged on first use.
func MungeSigner(c *flux.Conn, socket string) *sign.Munge {
	if socket == "" {
		socket = munge.DefaultSocket
	}
	return &sign.Munge{Client: &munge.Client{Dial: func(ctx context.Context) (net.Conn, error) {
		return c.DialHostSocket(ctx, socket)
	}}}
}

// Urgency returns a pointer to u, for SubmitOptions.Urgency.
func Urgency(u int) *int { return &u }

type submitRequest struct {
	J       string `json:"J"`
	Urgency int    `json:"urgency"`
	Flags   int    `json:"flags"`
}

// processUID is the process's uid, read once (a getuid system call per
// submission showed in profiles).
var processUID = sync.OnceValue(func() uint32 { return uint32(os.Getuid()) })

// SignNone wraps a jobspec as flux-core does for mechanism "none" when
// flux-security is not used (src/common/libjob/sign_none.c):
// base64(header) "." base64(jobspec) ".none", the header being the
// NUL-separated fields "version" "i1" "userid" "i<uid>" "mechanism"
// "snone". The jobspec bytes are wrapped as given.
func SignNone(jobspec []byte, uid uint32) string {
	header := "version\x00i1\x00userid\x00i" + strconv.FormatUint(uint64(uid), 10) + "\x00mechanism\x00snone\x00"
	enc := base64.StdEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(jobspec) + ".none"
}

// Submit submits a job through job-ingest.submit and returns its ID. spec
// is the jobspec's encoding (JSON), wrapped with SignNone, or with
// opts.PreSigned a signed J sent as is. The jobspec is not validated
// here: the broker's validator does it, and its refusal is a *flux.Error
// (errno EPERM for "Missing key (tasks)" and the like, EINVAL for bad
// JSON), wrapped.
func Submit(ctx context.Context, c *flux.Conn, spec []byte, opts SubmitOptions) (ID, error) {
	payload, err := submitPayload(ctx, spec, opts)
	if err != nil {
		return 0, err
	}
	var raw json.RawMessage
	if err := c.RPC(ctx, topicSubmit, payload, &raw); err != nil {
		return 0, fmt.Errorf("job: submit: %w", err)
	}
	return decodeSubmitResponse(raw)
}

// StartSubmit is Submit without waiting: once the request is queued
// (StartSubmit returned nil), h is called exactly once, on c's reader
// goroutine, with the job's ID or the error Submit would have returned.
// Like any flux.Handler, h must not block. ctx bounds only the signing
// (opts.Signer, called before StartSubmit returns) and the queueing.
func StartSubmit(ctx context.Context, c *flux.Conn, spec []byte, opts SubmitOptions, h func(ID, error)) error {
	payload, err := submitPayload(ctx, spec, opts)
	if err != nil {
		return err
	}
	err = c.StartRPC(ctx, topicSubmit, payload, func(p []byte, err error) {
		if err != nil {
			h(0, fmt.Errorf("job: submit: %w", err))
			return
		}
		h(decodeSubmitResponse(p))
	})
	if err != nil {
		return fmt.Errorf("job: submit: %w", err)
	}
	return nil
}

// submitPayload builds the job-ingest.submit request for spec.
func submitPayload(ctx context.Context, spec []byte, opts SubmitOptions) ([]byte, error) {
	req := submitRequest{Urgency: UrgencyDefault}
	if opts.Urgency != nil {
		req.Urgency = *opts.Urgency
	}
	if req.Urgency < UrgencyMin || req.Urgency > UrgencyMax {
		return nil, fmt.Errorf("job: submit: urgency %d out of range [%d:%d]: %w", req.Urgency, UrgencyMin, UrgencyMax, syscall.EINVAL)
	}
	if opts.Debug {
		req.Flags |= flagDebug
	}
	if opts.Waitable {
		req.Flags |= flagWaitable
	}
	if opts.NoValidate {
		req.Flags |= flagNoValidate
	}
	switch {
	case opts.PreSigned:
		req.J = string(spec)
	case opts.Signer != nil:
		j, err := opts.Signer.Wrap(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("job: submit: signing the jobspec: %w", err)
		}
		req.J = j
	default:
		uid := processUID()
		if opts.UserID != nil {
			uid = *opts.UserID
		}
		req.J = SignNone(spec, uid)
	}
	return req.appendPayload(make([]byte, 0, len(req.J)+48)), nil
}

// decodeSubmitResponse decodes job-ingest.submit's {"id":N}.
func decodeSubmitResponse(raw []byte) (ID, error) {
	if id, ok := scanIDResponse(raw); ok {
		return id, nil
	}
	var resp struct {
		ID *ID `json:"id"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return 0, fmt.Errorf("job: submit: decoding response: %w", err)
	}
	if resp.ID == nil {
		return 0, fmt.Errorf("job: submit: response has no job ID: %w", syscall.EPROTO)
	}
	return *resp.ID, nil
}

// appendPayload appends the request's JSON and its NUL terminator to b:
// the bytes encoding/json (without HTML escaping) would produce, written
// by hand.
func (r *submitRequest) appendPayload(b []byte) []byte {
	b = append(b, `{"J":`...)
	b = appendJSONString(b, r.J)
	b = append(b, `,"urgency":`...)
	b = strconv.AppendInt(b, int64(r.Urgency), 10)
	b = append(b, `,"flags":`...)
	b = strconv.AppendInt(b, int64(r.Flags), 10)
	return append(b, '}', 0)
}

// appendJSONString appends s as a JSON string, as encoding/json without
// HTML escaping writes it: by hand when s is printable ASCII without
// quotes or backslashes (a signed J, an eventlog path), else through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// scanIDResponse decodes {"id":N}, the usual job-ingest.submit response,
// without reflection; anything else is left to encoding/json.
func scanIDResponse(p []byte) (ID, bool) {
	const prefix = `{"id":`
	if !bytes.HasPrefix(p, []byte(prefix)) || len(p) < len(prefix)+2 || p[len(p)-1] != '}' {
		return 0, false
	}
	digits := p[len(prefix) : len(p)-1]
	if len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	var v uint64
	for _, c := range digits {
		if c < '0' || c > '9' || v > (math.MaxUint64-9)/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return ID(v), true
}

// SubmitJobspec marshals js and submits it with Submit.
func SubmitJobspec(ctx context.Context, c *flux.Conn, js *Jobspec, opts SubmitOptions) (ID, error) {
	b, err := json.Marshal(js)
	if err != nil {
		return 0, fmt.Errorf("job: submit: encoding jobspec: %w", err)
	}
	return Submit(ctx, c, b, opts)
}

// WatchOptions are the options of WatchEvents.
type WatchOptions struct {
	// Path is the eventlog to watch, relative to the job's KVS directory:
	// "" means "eventlog"; "guest.exec.eventlog" is the exec eventlog.
	Path string
	// WaitCreate waits for the eventlog to exist instead of failing
	// (FLUX_JOB_EVENT_WATCH_WAITCREATE), as `flux job eventlog -f` does.
	WaitCreate bool
}

// EventWatch is a running job-info.eventlog-watch. Next is meant for one
// goroutine; Close may be called from any.
type EventWatch struct {
	s    *flux.Stream
	id   ID
	path string
}

// WatchEvents starts following a job's eventlog: every event already
// posted, then each new one, until the eventlog ends (the main eventlog
// ends after "clean"). The watch lives until ctx ends or Close; either
// cancels it at the service (job-info.eventlog-watch-cancel). An unknown
// job is reported by the first Next, as an error matching syscall.ENOENT.
func WatchEvents(ctx context.Context, c *flux.Conn, id ID, opts WatchOptions) (*EventWatch, error) {
	req, path := eventWatchPayload(id, opts)
	s, err := c.Stream(ctx, topicEventlog, req)
	if err != nil {
		return nil, fmt.Errorf("job %s: watching %s: %w", id, path, err)
	}
	return &EventWatch{s: s, id: id, path: path}, nil
}

// StartWatchEvents is WatchEvents without a goroutine waiting in Next:
// once it returned nil, h is called on c's reader goroutine with each
// event, in order, and then exactly once with what Next would have
// returned at the end (io.EOF when the eventlog ended, or the error). A
// response that does not decode ends the watch with its error (the watch
// is then cancelled at the service and its remaining responses ignored).
// Like any flux.Handler, h must not block. cancel stops the watch at the
// service; h still gets the end. ctx's end cancels the watch too.
func StartWatchEvents(ctx context.Context, c *flux.Conn, id ID, opts WatchOptions, h func(Event, error)) (cancel func(), err error) {
	req, path := eventWatchPayload(id, opts)
	return startStream[Event](ctx, c, topicEventlog, req, &eventCodec{id: id, path: path}, h)
}

// eventCodec is the streamCodec of an eventlog watch.
type eventCodec struct {
	id   ID
	path string
}

func (e *eventCodec) decode(p []byte) (Event, error) { return decodeEventResponse(e.id, e.path, p) }

func (e *eventCodec) wrap(err error) error {
	return fmt.Errorf("job %s: watching %s: %w", e.id, e.path, err)
}

// eventWatchPayload builds the job-info.eventlog-watch request and
// returns it with the eventlog's path.
func eventWatchPayload(id ID, opts WatchOptions) ([]byte, string) {
	path := opts.Path
	if path == "" {
		path = defaultEventlog
	}
	flags := 0
	if opts.WaitCreate {
		flags |= eventWatchWaitCreate
	}
	// {"id":ID,"path":PATH,"flags":F}, as encoding/json would write it
	req := append(make([]byte, 0, 64), `{"id":`...)
	req = strconv.AppendUint(req, uint64(id), 10)
	req = append(req, `,"path":`...)
	req = appendJSONString(req, path)
	req = append(req, `,"flags":`...)
	req = strconv.AppendInt(req, int64(flags), 10)
	req = append(req, '}', 0)
	return req, path
}

// Next returns the next event. It returns io.EOF only when the service
// ended the eventlog (ENODATA), and otherwise the stream's error (a
// *flux.Error from the service, flux.ErrClosed or flux.ErrDisconnected,
// the context's error, flux.ErrStreamClosed after Close), wrapped. A broker
// that hung up is not the end of the eventlog: the error matches
// flux.ErrDisconnected, even though that wraps the connection's io.EOF.
func (w *EventWatch) Next() (Event, error) {
	var raw json.RawMessage
	if err := w.s.Recv(&raw); err != nil {
		if isStreamEnd(err) {
			return Event{}, io.EOF
		}
		return Event{}, fmt.Errorf("job %s: watching %s: %w", w.id, w.path, err)
	}
	return decodeEventResponse(w.id, w.path, raw)
}

// decodeEventResponse decodes a job-info.eventlog-watch response,
// {"event":"<one eventlog line>"}.
func decodeEventResponse(id ID, path string, raw []byte) (Event, error) {
	if len(raw) <= clipLine {
		if ev, ok := scanEventResponse(raw); ok {
			return ev, nil
		}
	}
	var resp struct {
		Event *string `json:"event"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return Event{}, fmt.Errorf("job %s: watching %s: decoding response: %w", id, path, err)
	}
	if resp.Event == nil {
		return Event{}, fmt.Errorf("job %s: watching %s: response has no event: %w", id, path, syscall.EPROTO)
	}
	ev, err := ParseEvent([]byte(*resp.Event))
	if err != nil {
		return Event{}, fmt.Errorf("job %s: watching %s: %w", id, path, err)
	}
	return ev, nil
}

// Close stops the watch, cancelling it at the service if it has not ended.
func (w *EventWatch) Close() error { return w.s.Close() }

// isStreamEnd reports whether err from flux.Stream.Recv is the normal end
// of the stream (the service's ENODATA, which Recv returns as a bare
// io.EOF), as opposed to the Conn ending: flux.ErrDisconnected wraps the
// socket's io.EOF and must not be taken for it.
func isStreamEnd(err error) bool {
	return errors.Is(err, io.EOF) && !errors.Is(err, flux.ErrDisconnected) && !errors.Is(err, flux.ErrClosed)
}

// Raise raises an exception on a job (job-manager.raise). Severity 0 is
// fatal: the job is cancelled. note may be empty. As the job manager does
// (src/modules/job-manager/raise.c), a severity outside 0-7 or a type that
// is empty or holds white space or '=' is refused (EPROTO), here without
// a round trip.
func Raise(ctx context.Context, c *flux.Conn, id ID, typ string, severity int, note string) error {
	if severity < 0 || severity > 7 {
		return fmt.Errorf("job %s: raise: invalid exception severity %d: %w", id, severity, syscall.EPROTO)
	}
	if typ == "" || strings.ContainsAny(typ, " \t\n\v\f\r=") {
		return fmt.Errorf("job %s: raise: invalid exception type %q: %w", id, typ, syscall.EPROTO)
	}
	req := struct {
		ID       ID     `json:"id"`
		Type     string `json:"type"`
		Severity int    `json:"severity"`
		Note     string `json:"note,omitempty"`
	}{id, typ, severity, note}
	if err := c.RPC(ctx, topicRaise, req, nil); err != nil {
		return fmt.Errorf("job %s: raise %s exception: %w", id, typ, err)
	}
	return nil
}

// Cancel cancels a job, as `flux cancel` does: a fatal exception of type
// "cancel" with reason as its note (may be empty). Cancelling an inactive
// job fails with an error matching syscall.ENOENT ("job is inactive").
func Cancel(ctx context.Context, c *flux.Conn, id ID, reason string) error {
	return Raise(ctx, c, id, "cancel", 0, reason)
}

// Kill sends a signal to a running job's tasks (job-manager.kill).
func Kill(ctx context.Context, c *flux.Conn, id ID, sig syscall.Signal) error {
	req := struct {
		ID     ID  `json:"id"`
		Signum int `json:"signum"`
	}{id, int(sig)}
	if err := c.RPC(ctx, topicKill, req, nil); err != nil {
		return fmt.Errorf("job %s: kill with signal %d: %w", id, int(sig), err)
	}
	return nil
}

// SetUrgency changes a pending job's urgency (job-manager.urgency) and
// returns the previous one. Once resources are allocated the broker
// refuses with EINVAL ("urgency cannot be changed once resources are
// allocated").
func SetUrgency(ctx context.Context, c *flux.Conn, id ID, urgency int) (old int, err error) {
	if urgency < UrgencyMin || urgency > UrgencyMax {
		return 0, fmt.Errorf("job %s: urgency %d out of range [%d:%d]: %w", id, urgency, UrgencyMin, UrgencyMax, syscall.EINVAL)
	}
	req := struct {
		ID      ID  `json:"id"`
		Urgency int `json:"urgency"`
	}{id, urgency}
	var resp struct {
		Old int `json:"old_urgency"`
	}
	if err := c.RPC(ctx, topicUrgency, req, &resp); err != nil {
		return 0, fmt.Errorf("job %s: set urgency %d: %w", id, urgency, err)
	}
	return resp.Old, nil
}

// WaitResult is what job-manager.wait reports for a waitable job.
type WaitResult struct {
	ID      ID     `json:"id"`
	Success bool   `json:"success"`
	Errstr  string `json:"errstr"`
}

// Wait waits for a waitable job to become inactive and collects it
// (job-manager.wait). A job not submitted waitable, or already waited
// for, is an error.
func Wait(ctx context.Context, c *flux.Conn, id ID) (WaitResult, error) {
	return wait(ctx, c, id, id.String())
}

// WaitAny waits for any waitable job of the caller. With none left the
// broker answers ECHILD ("there are no more waitable jobs").
func WaitAny(ctx context.Context, c *flux.Conn) (WaitResult, error) {
	return wait(ctx, c, -1, "any") // FLUX_JOBID_ANY
}

// wait sends {"id": id}; id is an ID or -1.
func wait(ctx context.Context, c *flux.Conn, id any, what string) (WaitResult, error) {
	req := struct {
		ID any `json:"id"`
	}{id}
	var resp WaitResult
	if err := c.RPC(ctx, topicWait, req, &resp); err != nil {
		return WaitResult{}, fmt.Errorf("job %s: wait: %w", what, err)
	}
	return resp, nil
}
