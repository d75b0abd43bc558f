package testbroker_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// TestPing: broker.ping echoes its object with route, userid and
// rolemask (EPROTO without a payload), and a Conn with a keepalive stays
// up against the test broker.
func TestPing(t *testing.T) {
	srv := startServer(t, testbroker.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := flux.Dial(ctx, srv.URI(), flux.WithKeepalive(10*time.Millisecond, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out struct {
		Seq      int    `json:"seq"`
		Route    string `json:"route"`
		UserID   uint32 `json:"userid"`
		Rolemask uint32 `json:"rolemask"`
	}
	if err := c.RPC(ctx, flux.KeepaliveTopic, map[string]int{"seq": 7}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Seq != 7 || out.Route == "" || out.Rolemask != 5 {
		t.Errorf("ping answer = %+v", out)
	}
	if err := c.RPC(ctx, flux.KeepaliveTopic, nil, nil); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("ping without payload: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // ten keepalives
	if err := c.Err(); err != nil {
		t.Fatalf("keepalive ended the Conn: %v", err)
	}
	if n := srv.RequestCount(flux.KeepaliveTopic); n < 5 {
		t.Errorf("%d pings", n)
	}
}
