package fluxtest

import (
	"context"
	"io"
	"sync"
)

// Staller makes the streams of a Dialer it wraps (Stallable) stop moving
// bytes on demand: a stalled pipe, as a relay whose process is stopped or
// a network path that drops everything looks to the client.
type Staller struct {
	stalled chan struct{} // closed by Stall
	once    sync.Once
}

// Stallable returns a Dialer whose streams are d's until s.Stall is
// called; from then on their Read and Write block (bytes already read are
// returned first) until the stream is closed.
func Stallable(d Dialer) (Dialer, *Staller) {
	s := &Staller{stalled: make(chan struct{})}
	return func(ctx context.Context, uri string) (io.ReadWriteCloser, error) {
		rwc, err := d(ctx, uri)
		if err != nil {
			return nil, err
		}
		return &stallStream{rwc: rwc, s: s, closed: make(chan struct{})}, nil
	}, s
}

// Stall stalls every stream of the Dialer, present and future.
func (s *Staller) Stall() { s.once.Do(func() { close(s.stalled) }) }

type stallStream struct {
	rwc    io.ReadWriteCloser
	s      *Staller
	once   sync.Once
	closed chan struct{}
}

func (p *stallStream) wait() error {
	select {
	case <-p.s.stalled:
		<-p.closed
		return io.ErrClosedPipe
	default:
		return nil
	}
}

func (p *stallStream) Read(b []byte) (int, error) {
	if err := p.wait(); err != nil {
		return 0, err
	}
	n, err := p.rwc.Read(b)
	if err == nil {
		select {
		case <-p.s.stalled:
			// stalled while this read waited: its bytes never arrive
			<-p.closed
			return 0, io.ErrClosedPipe
		default:
		}
	}
	return n, err
}

func (p *stallStream) Write(b []byte) (int, error) {
	if err := p.wait(); err != nil {
		return 0, err
	}
	return p.rwc.Write(b)
}

// Close closes the stream and unblocks its stalled calls.
func (p *stallStream) Close() error {
	p.once.Do(func() { close(p.closed) })
	return p.rwc.Close()
}
