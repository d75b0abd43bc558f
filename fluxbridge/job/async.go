package job

import (
	"context"
	"io"
	"sync"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// startStream starts a streaming RPC whose responses are decoded with
// decode and handed to h on c's reader goroutine, then ends h with io.EOF
// (the service's ENODATA) or the error, wrapped by wrap (the error of a
// response that does not decode is passed as decode returned it). After
// the end h is not called again: a response that does not decode cancels
// the stream and its remaining responses are dropped.
func startStream[T any](ctx context.Context, c *flux.Conn, topic string, req any,
	decode func([]byte) (T, error), wrap func(error) error, h func(T, error),
) (cancel func(), err error) {
	var (
		zero  T
		ended bool // touched on the reader goroutine only
		// A response that does not decode cancels the stream; it may come
		// before StartStream has returned the cancel func.
		mu            sync.Mutex
		stop          func()
		cancelPending bool
	)
	cancelNow := func() {
		mu.Lock()
		s := stop
		cancelPending = s == nil
		mu.Unlock()
		if s != nil {
			s()
		}
	}
	s, err := c.StartStream(ctx, topic, req, func(p []byte, err error) {
		if ended {
			return
		}
		if err != nil {
			ended = true
			if isStreamEnd(err) {
				h(zero, io.EOF)
				return
			}
			h(zero, wrap(err))
			return
		}
		v, derr := decode(p)
		if derr != nil {
			ended = true
			h(zero, derr)
			cancelNow()
			return
		}
		h(v, nil)
	})
	if err != nil {
		return nil, wrap(err)
	}
	mu.Lock()
	stop = s
	pending := cancelPending
	mu.Unlock()
	if pending {
		s()
	}
	return s, nil
}
