package fluxbridge

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// countingSigner is a "none" Signer that counts its envelopes per
// connection it was made for.
type countingSigner struct {
	sign.None
	conn *flux.Conn
	mu   *sync.Mutex
	n    map[*flux.Conn]int
}

func (s countingSigner) Wrap(ctx context.Context, p []byte) (string, error) {
	s.mu.Lock()
	s.n[s.conn]++
	s.mu.Unlock()
	return s.None.Wrap(ctx, p)
}

// TestExecutorSigner: ExecutorOptions.NewSigner is made once per worker
// connection and signs every submission without a Signer of its own; a
// request's Signer takes precedence.
func TestExecutorSigner(t *testing.T) {
	srv := startBroker(t, testbroker.Options{})
	var mu sync.Mutex
	counts := map[*flux.Conn]int{}
	made := 0
	uid := uint32(os.Getuid())
	e := newTestExecutor(t, srv, execConfig{workers: 2, newSigner: func(c *flux.Conn) sign.Signer {
		made++
		return countingSigner{None: sign.None{UserID: uid}, conn: c, mu: &mu, n: counts}
	}})
	if made != 2 {
		t.Fatalf("NewSigner called %d times, want once per worker (2)", made)
	}
	var fs []*Future
	for range 4 {
		fs = append(fs, submit(t, e, "true"))
	}
	own := countingSigner{None: sign.None{UserID: uid}, mu: &mu, n: counts}
	f, err := e.Submit(testCtx(t), spec(t, "true"), job.SubmitOptions{Signer: own})
	if err != nil {
		t.Fatal(err)
	}
	fs = append(fs, f)
	for _, f := range fs {
		if rc, err := f.Result(testCtx(t)); err != nil || rc != 0 {
			t.Fatalf("result %d, %v", rc, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for c, n := range counts {
		if c != nil {
			total += n
		}
	}
	if total != 4 || counts[nil] != 1 || len(counts) != 3 {
		t.Fatalf("signatures per connection %v: want 4 by the workers' signers over 2 connections, 1 by the request's", counts)
	}
}
