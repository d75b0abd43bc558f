package job

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// OutputPath is the job's output eventlog (RFC 24), relative to its KVS
// directory: the job shell writes it in the job's guest namespace while the
// job runs, and job-exec moves it into the job's directory once the job is
// released; job-info.eventlog-watch serves both (flux-core
// src/modules/job-info/guest_watch.c).
const OutputPath = "guest.output"

// Output streams.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Output event names (RFC 24; flux-core src/shell/output/kvs.c writes
// header and redirect, src/shell/output/task.c data, src/shell/evlog.c log).
const (
	OutputHeaderEvent   = "header"
	OutputDataEvent     = "data"
	OutputRedirectEvent = "redirect"
	OutputLogEvent      = "log"
)

// OutputEvent is one entry of a job's output eventlog, decoded. Exactly one
// of Header, Data, Redirect and Log is set for the four RFC 24 event names;
// an entry with another name has none (Name says what it was) and is not an
// error, so that a newer shell's additions do not break a reader.
type OutputEvent struct {
	Timestamp float64
	Name      string
	// Sentinel marks the end of the entries that existed when the watch
	// started (OutputOptions.Sentinel); it has no name and no data.
	Sentinel bool
	Header   *OutputHeader
	Data     *OutputData
	Redirect *OutputRedirect
	Log      *OutputLog
}

// OutputHeader is the "header" event the shell writes first: version 1,
// each stream's encoding ("UTF-8" in flux-core 0.88, which encodes a data
// event that is not valid UTF-8 in base64 instead, per event), the number
// of writers of each stream (the job's tasks) and options (empty).
type OutputHeader struct {
	Version  int               `json:"version"`
	Encoding map[string]string `json:"encoding,omitempty"`
	Count    map[string]int    `json:"count,omitempty"`
	Options  map[string]any    `json:"options,omitempty"`
}

// OutputData is a "data" event: bytes a task wrote to one stream (one line,
// as the shell buffers by line by default; unbuffered output comes in
// whatever pieces the shell read), and/or the end of that stream (EOF). Data
// holds the bytes as the task wrote them: a base64 event
// ("encoding":"base64", used by flux-core's ioencode when the bytes are not
// valid UTF-8) is decoded.
type OutputData struct {
	Stream string // Stdout or Stderr
	// Rank is the task rank, as the decimal string the shell writes.
	Rank string
	Data []byte
	EOF  bool
}

// OutputRedirect is a "redirect" event: the stream of the tasks in Rank (an
// RFC 22 idset such as "[0-3]") went to the file Path instead of the
// eventlog (flux submit --output / --error).
type OutputRedirect struct {
	Stream string `json:"stream"`
	Rank   string `json:"rank"`
	Path   string `json:"path,omitempty"`
}

// OutputLog is a "log" event: a message of the job shell itself (an error
// starting a task, a truncation warning), with an RFC 5424 severity Level.
// Rank is the shell's rank, -1 when absent; Line is 0 when absent.
type OutputLog struct {
	Rank      int    `json:"rank"`
	Level     int    `json:"level"`
	Message   string `json:"message"`
	Component string `json:"component,omitempty"`
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
}

// LevelName is the prefix flux job attach prints for a shell log level
// (src/cmd/job/attach.c): FATAL for 0-2, ERROR, WARN, "" (notice), DEBUG,
// TRACE.
func (l OutputLog) LevelName() string {
	switch {
	case l.Level >= 0 && l.Level <= 2:
		return "FATAL"
	case l.Level == 3:
		return "ERROR"
	case l.Level == 4:
		return "WARN"
	case l.Level == 6:
		return "DEBUG"
	case l.Level == 7:
		return "TRACE"
	}
	return ""
}

// String formats the message as flux job attach does on stderr, without
// the time: "flux-shell[0]: ERROR: component: message".
func (l OutputLog) String() string {
	s := "flux-shell"
	if l.Rank >= 0 {
		s += "[" + strconv.Itoa(l.Rank) + "]"
	}
	if n := l.LevelName(); n != "" {
		s += ": " + n
	}
	if l.Component != "" {
		s += ": " + l.Component
	}
	return s + ": " + l.Message
}

// ParseOutputEvent decodes one line of an output eventlog. The entry must
// be a valid eventlog entry (as ParseEvent requires), and the four RFC 24
// events must carry what flux job attach needs of them: a data event a
// string stream and rank and data or eof (else EPROTO, as flux-core's
// iodecode says), a redirect event a stream and rank, a log event a level
// and message; base64 data must decode. Errors match ErrInvalidEvent.
func ParseOutputEvent(line []byte) (OutputEvent, error) {
	for len(line) > 0 && line[len(line)-1] == '\n' {
		line = line[:len(line)-1]
	}
	var e struct {
		Timestamp *float64        `json:"timestamp"`
		Name      *string         `json:"name"`
		Context   json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return OutputEvent{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if e.Name == nil || *e.Name == "" {
		return OutputEvent{}, eventErr(`"name" missing or empty`)
	}
	if e.Timestamp == nil || *e.Timestamp < 0 || math.IsInf(*e.Timestamp, 0) {
		return OutputEvent{}, eventErr(`%q: "timestamp" missing or out of range`, *e.Name)
	}
	ev := OutputEvent{Timestamp: *e.Timestamp, Name: *e.Name}
	ctx := e.Context
	if len(ctx) == 0 || string(ctx) == "null" {
		ctx = nil
	} else if ctx[0] != '{' {
		return OutputEvent{}, eventErr(`%q: "context" is not an object`, ev.Name)
	}
	var err error
	switch ev.Name {
	case OutputHeaderEvent:
		ev.Header, err = decodeOutputHeader(ctx)
	case OutputDataEvent:
		ev.Data, err = decodeOutputData(ctx)
	case OutputRedirectEvent:
		ev.Redirect, err = decodeOutputRedirect(ctx)
	case OutputLogEvent:
		ev.Log, err = decodeOutputLog(ctx)
	}
	if err != nil {
		return OutputEvent{}, fmt.Errorf("%w: %q context: %w", ErrInvalidEvent, ev.Name, err)
	}
	return ev, nil
}

func decodeOutputHeader(ctx []byte) (*OutputHeader, error) {
	h := &OutputHeader{}
	if ctx == nil {
		return nil, fmt.Errorf("no context")
	}
	if err := json.Unmarshal(ctx, h); err != nil {
		return nil, err
	}
	return h, nil
}

func decodeOutputData(ctx []byte) (*OutputData, error) {
	var c struct {
		Stream   *string `json:"stream"`
		Rank     *string `json:"rank"`
		Encoding *string `json:"encoding"`
		Data     *string `json:"data"`
		EOF      *bool   `json:"eof"`
	}
	if ctx == nil {
		return nil, syscall.EPROTO
	}
	if err := json.Unmarshal(ctx, &c); err != nil {
		return nil, err
	}
	if c.Stream == nil || c.Rank == nil || (c.Data == nil && c.EOF == nil) {
		return nil, fmt.Errorf("stream, rank and data or eof are required: %w", syscall.EPROTO)
	}
	d := &OutputData{Stream: *c.Stream, Rank: *c.Rank, EOF: c.EOF != nil && *c.EOF}
	if c.Data != nil {
		// flux-core iodecode: "base64" is decoded, any other (or no)
		// encoding is the string's bytes.
		if c.Encoding != nil && *c.Encoding == "base64" {
			b, err := decodeBase64(*c.Data)
			if err != nil {
				return nil, fmt.Errorf("base64 data: %w", err)
			}
			d.Data = b
		} else {
			d.Data = []byte(*c.Data)
		}
	}
	return d, nil
}

// decodeBase64 decodes standard base64 (flux-core's ccan base64), padded
// or not.
func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func decodeOutputRedirect(ctx []byte) (*OutputRedirect, error) {
	var c struct {
		Stream *string `json:"stream"`
		Rank   *string `json:"rank"`
		Path   string  `json:"path"`
	}
	if ctx == nil {
		return nil, syscall.EPROTO
	}
	if err := json.Unmarshal(ctx, &c); err != nil {
		return nil, err
	}
	if c.Stream == nil || c.Rank == nil {
		return nil, fmt.Errorf("stream and rank are required: %w", syscall.EPROTO)
	}
	return &OutputRedirect{Stream: *c.Stream, Rank: *c.Rank, Path: c.Path}, nil
}

func decodeOutputLog(ctx []byte) (*OutputLog, error) {
	var c struct {
		Rank      *int    `json:"rank"`
		Level     *int    `json:"level"`
		Message   *string `json:"message"`
		Component string  `json:"component"`
		File      string  `json:"file"`
		Line      int     `json:"line"`
	}
	if ctx == nil {
		return nil, syscall.EPROTO
	}
	if err := json.Unmarshal(ctx, &c); err != nil {
		return nil, err
	}
	if c.Level == nil || c.Message == nil {
		return nil, fmt.Errorf("level and message are required: %w", syscall.EPROTO)
	}
	l := &OutputLog{Rank: -1, Level: *c.Level, Message: *c.Message, Component: c.Component, File: c.File, Line: c.Line}
	if c.Rank != nil {
		l.Rank = *c.Rank
	}
	return l, nil
}

// decodeOutputResponse decodes a job-info.eventlog-watch response of the
// output eventlog, {"event":"<one eventlog line>"}.
func decodeOutputResponse(id ID, raw []byte) (OutputEvent, error) {
	if len(raw) == 0 {
		// job-info's initial sentinel: a response without a payload
		return OutputEvent{Sentinel: true}, nil
	}
	var resp struct {
		Event *string `json:"event"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return OutputEvent{}, fmt.Errorf("job %s: watching %s: decoding response: %w", id, OutputPath, err)
	}
	if resp.Event == nil {
		return OutputEvent{}, fmt.Errorf("job %s: watching %s: response has no event: %w", id, OutputPath, syscall.EPROTO)
	}
	ev, err := ParseOutputEvent([]byte(*resp.Event))
	if err != nil {
		return OutputEvent{}, fmt.Errorf("job %s: watching %s: %w", id, OutputPath, err)
	}
	return ev, nil
}

// OutputOptions are the options of WatchOutput.
type OutputOptions struct {
	// Sentinel asks for an OutputEvent with Sentinel set after the entries
	// that exist when the watch starts (FLUX_JOB_EVENT_WATCH_INITIAL_SENTINEL;
	// job-info sends it once the job's shell has started), as a reader that
	// prints what is there and stops needs.
	Sentinel bool
}

// outputWatchPayload builds the request: the output eventlog appears only
// when the job shell starts, so the watch waits for it
// (FLUX_JOB_EVENT_WATCH_WAITCREATE; job-info drops the flag for a job that
// already ended, src/modules/job-info/guest_watch.c).
func outputWatchPayload(id ID, opts OutputOptions) []byte {
	flags := eventWatchWaitCreate
	if opts.Sentinel {
		flags |= eventWatchInitialSentinel
	}
	req := append(make([]byte, 0, 64), `{"id":`...)
	req = strconv.AppendUint(req, uint64(id), 10)
	req = append(req, `,"path":"`+OutputPath+`","flags":`...)
	req = strconv.AppendInt(req, int64(flags), 10)
	return append(req, '}', 0)
}

// OutputWatch is a running watch of a job's output eventlog. Next is meant
// for one goroutine; Close may be called from any.
type OutputWatch struct {
	s  *flux.Stream
	id ID
}

// WatchOutput follows a job's output eventlog (job-info.eventlog-watch of
// OutputPath, waiting for it to be created), as flux job attach reads a
// job's standard output and error: every entry already written, then each
// new one, until the eventlog is complete (the job's shells exited and its
// guest namespace was moved into the job's directory), when Next returns
// io.EOF. A job that never ran ends the same way without events; an unknown
// job is an error matching syscall.ENOENT. ctx's end or Close cancels the
// watch at the service.
//
// flux-core 0.88 has a race here: a watch that starts after the job's
// guest namespace was removed but before "release" is in its main eventlog
// waits for the namespace to come back, and never ends (checked against a
// real broker: a second watch started as the first one ended hung). A
// reader of a job that just ended should start after the job's "clean"
// event.
func WatchOutput(ctx context.Context, c *flux.Conn, id ID, opts OutputOptions) (*OutputWatch, error) {
	req := outputWatchPayload(id, opts)
	s, err := c.Stream(ctx, topicEventlog, req)
	if err != nil {
		return nil, fmt.Errorf("job %s: watching %s: %w", id, OutputPath, err)
	}
	return &OutputWatch{s: s, id: id}, nil
}

// Next returns the next output event, io.EOF at the end of the eventlog, or
// the stream's error wrapped (see EventWatch.Next).
func (w *OutputWatch) Next() (OutputEvent, error) {
	var raw json.RawMessage
	if err := w.s.Recv(&raw); err != nil {
		if isStreamEnd(err) {
			return OutputEvent{}, io.EOF
		}
		return OutputEvent{}, fmt.Errorf("job %s: watching %s: %w", w.id, OutputPath, err)
	}
	return decodeOutputResponse(w.id, raw)
}

// Close stops the watch, cancelling it at the service if it has not ended.
func (w *OutputWatch) Close() error { return w.s.Close() }

// StartWatchOutput is WatchOutput without a goroutine waiting in Next: h is
// called on c's reader goroutine with each event, then exactly once with
// the end (io.EOF or the error), as StartWatchEvents does. h must not
// block. cancel (or ctx's end) stops the watch; h still gets the end.
func StartWatchOutput(ctx context.Context, c *flux.Conn, id ID, opts OutputOptions, h func(OutputEvent, error)) (cancel func(), err error) {
	req := outputWatchPayload(id, opts)
	return startStream[OutputEvent](ctx, c, topicEventlog, req, outputCodec(id), h)
}

// outputCodec is the streamCodec of an output watch.
type outputCodec ID

func (o outputCodec) decode(p []byte) (OutputEvent, error) { return decodeOutputResponse(ID(o), p) }

func (o outputCodec) wrap(err error) error {
	return fmt.Errorf("job %s: watching %s: %w", ID(o), OutputPath, err)
}
