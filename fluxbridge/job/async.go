package job

import (
	"context"
	"io"
	"sync"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// streamCodec decodes a stream's responses and wraps its errors.
type streamCodec[T any] interface {
	decode(p []byte) (T, error)
	wrap(err error) error
}

// startStream starts a streaming RPC whose responses are decoded with
// codec and handed to h on c's reader goroutine, then ends h with io.EOF
// (the service's ENODATA) or the error, wrapped by codec (the error of a
// response that does not decode is passed as decoding returned it). After
// the end h is not called again: a response that does not decode cancels
// the stream and its remaining responses are dropped. A stream costs one
// streamState (and codec) besides the Conn's own record: an executor
// follows every job it runs with one (fluxbridge's eventlog source).
func startStream[T any](ctx context.Context, c *flux.Conn, topic string, req any, codec streamCodec[T], h func(T, error)) (cancel func(), err error) {
	st := &streamState[T]{codec: codec, h: h}
	s, err := c.StartStream(ctx, topic, req, st.handle)
	if err != nil {
		return nil, codec.wrap(err)
	}
	st.mu.Lock()
	st.stop = s
	pending := st.cancelPending
	st.mu.Unlock()
	if pending {
		s()
	}
	return s, nil
}

// streamState is one stream of startStream.
type streamState[T any] struct {
	codec streamCodec[T]
	h     func(T, error)
	ended bool // touched on the reader goroutine only
	// A response that does not decode cancels the stream; it may come
	// before StartStream has returned the cancel func.
	mu            sync.Mutex
	stop          func()
	cancelPending bool
}

func (st *streamState[T]) handle(p []byte, err error) {
	var zero T
	if st.ended {
		return
	}
	if err != nil {
		st.ended = true
		if isStreamEnd(err) {
			st.h(zero, io.EOF)
			return
		}
		st.h(zero, st.codec.wrap(err))
		return
	}
	v, derr := st.codec.decode(p)
	if derr != nil {
		st.ended = true
		st.h(zero, derr)
		st.cancelNow()
		return
	}
	st.h(v, nil)
}

func (st *streamState[T]) cancelNow() {
	st.mu.Lock()
	s := st.stop
	st.cancelPending = s == nil
	st.mu.Unlock()
	if s != nil {
		s()
	}
}
