package job

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"syscall"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// JournalOptions are the arguments of WatchJournal
// (flux-core v0.88.0 src/modules/job-manager/journal.c).
type JournalOptions struct {
	// Full replays the events of jobs that are already inactive first
	// (then a sentinel), not just those of active jobs.
	Full bool
	// Allow, if not empty, keeps only these event names; Deny drops these.
	Allow, Deny []string
}

// JournalEntry is one response of the job manager's events journal:
// events of one job, or the sentinel between the backlog and live events.
type JournalEntry struct {
	// ID is the job; meaningless for the sentinel.
	ID ID
	// Sentinel marks the end of the backlog (the service sends id -1 and
	// no events).
	Sentinel bool
	// Events are the job's events, in order: the whole log of a backlog
	// job, one event for a live one.
	Events []Event
	// Jobspec is the job's jobspec, sent with its first live entry
	// ("submit"); nil otherwise.
	Jobspec json.RawMessage
	// R is the job's resource set, sent with its "alloc" entry; nil
	// otherwise.
	R json.RawMessage
}

// JournalWatch is a running job-manager.events-journal stream. Next is
// meant for one goroutine; Close may be called from any.
type JournalWatch struct{ s *flux.Stream }

// WatchJournal follows the events of every job on one stream
// (job-manager.events-journal, instance owner only). The stream lives until
// ctx ends or Close, which cancel it at the service
// (job-manager.events-journal-cancel).
func WatchJournal(ctx context.Context, c *flux.Conn, opts JournalOptions) (*JournalWatch, error) {
	s, err := c.Stream(ctx, topicJournal, journalRequest(opts))
	if err != nil {
		return nil, fmt.Errorf("job: events journal: %w", err)
	}
	return &JournalWatch{s: s}, nil
}

// StartJournal is WatchJournal without a goroutine waiting in Next: once
// it returned nil, h is called on c's reader goroutine with each entry,
// in order, then exactly once with what Next would have returned at the
// end (io.EOF when the service ended the journal, or the error). A
// response that does not decode ends it with its error (the journal is
// then cancelled at the service). Like any flux.Handler, h must not
// block. cancel, or ctx's end, cancels the journal at the service; h
// still gets the end.
func StartJournal(ctx context.Context, c *flux.Conn, opts JournalOptions, h func(JournalEntry, error)) (cancel func(), err error) {
	return startStream[JournalEntry](ctx, c, topicJournal, journalRequest(opts), journalCodec{}, h)
}

// journalCodec is the streamCodec of the events journal.
type journalCodec struct{}

func (journalCodec) decode(p []byte) (JournalEntry, error) { return decodeJournalResponse(p) }

func (journalCodec) wrap(err error) error { return fmt.Errorf("job: events journal: %w", err) }

// journalRequest is the events-journal request for opts.
func journalRequest(opts JournalOptions) any {
	return struct {
		Full  bool            `json:"full"`
		Allow map[string]bool `json:"allow,omitempty"`
		Deny  map[string]bool `json:"deny,omitempty"`
	}{Full: opts.Full, Allow: nameSet(opts.Allow), Deny: nameSet(opts.Deny)}
}

// nameSet makes the {"name": true, ...} object journal.c looks names up in.
func nameSet(names []string) map[string]bool {
	if len(names) == 0 {
		return nil
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Next returns the next journal entry; io.EOF only when the service ended
// the stream (ENODATA). Otherwise the stream's error, wrapped: a broker
// that hung up matches flux.ErrDisconnected, a closed Conn flux.ErrClosed.
func (w *JournalWatch) Next() (JournalEntry, error) {
	var raw json.RawMessage
	if err := w.s.Recv(&raw); err != nil {
		if isStreamEnd(err) {
			return JournalEntry{}, io.EOF
		}
		return JournalEntry{}, fmt.Errorf("job: events journal: %w", err)
	}
	return decodeJournalResponse(raw)
}

// decodeJournalResponse decodes one journal response: by hand when it
// has the usual shape, else with encoding/json.
func decodeJournalResponse(raw []byte) (JournalEntry, error) {
	// the scanner decodes contexts whole: only for responses of the usual
	// size (a job's backlog is a few KiB); ParseEvent clips large ones
	if len(raw) <= maxScannedJournal {
		if e, ok := scanJournalEntry(raw); ok {
			return e, nil
		}
	}
	return decodeJournalEntry(raw)
}

// maxScannedJournal is the largest journal response decoded by the
// scanner.
const maxScannedJournal = 64 << 10

// decodeJournalEntry decodes a journal response with encoding/json,
// explaining what is wrong with a bad one.
func decodeJournalEntry(raw []byte) (JournalEntry, error) {
	var resp struct {
		ID      json.Number       `json:"id"` // the sentinel's -1 is no ID
		Events  []json.RawMessage `json:"events"`
		Jobspec json.RawMessage   `json:"jobspec"`
		R       json.RawMessage   `json:"R"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return JournalEntry{}, fmt.Errorf("job: events journal: decoding response: %w", err)
	}
	if resp.ID == "-1" {
		return JournalEntry{Sentinel: true}, nil
	}
	var id ID
	if err := id.UnmarshalJSON([]byte(resp.ID)); err != nil {
		return JournalEntry{}, fmt.Errorf("job: events journal: response without a valid job id: %w: %w", syscall.EPROTO, err)
	}
	e := JournalEntry{ID: id, Jobspec: resp.Jobspec, R: resp.R}
	for _, r := range resp.Events {
		ev, err := ParseEvent(r)
		if err != nil {
			return JournalEntry{}, fmt.Errorf("job %s: events journal: %w", id, err)
		}
		e.Events = append(e.Events, ev)
	}
	return e, nil
}

// Close stops the journal, cancelling it at the service if it has not
// ended.
func (w *JournalWatch) Close() error { return w.s.Close() }
