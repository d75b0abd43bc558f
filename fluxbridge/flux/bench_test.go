package flux

import (
	"context"
	"testing"
	"time"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/wire"
)

// BenchmarkRPC measures RPC round trips over a real unix socket to the
// in-test fake server (echo), one caller at a time and with parallel
// callers; rpc/s is reported as a metric.
func BenchmarkRPC(b *testing.B) {
	srv := newFakeServer(b, echoHandler)
	c, err := Dial(context.Background(), srv.uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	type req struct {
		ID    int64  `json:"id"`
		Topic string `json:"path"`
	}
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			var out req
			if err := c.RPC(ctx, "job-info.lookup", req{ID: 24779948032, Topic: "eventlog"}, &out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rpc/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				var out req
				if err := c.RPC(ctx, "job-info.lookup", req{ID: 24779948032, Topic: "eventlog"}, &out); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rpc/s")
	})
}

// BenchmarkStream measures streamed responses received per second.
func BenchmarkStream(b *testing.B) {
	srv := newFakeServer(b, func(sc *serverConn) {
		sc.serveLoop(func(m *wire.Message) {
			if m.Flags&wire.FlagStreaming == 0 {
				return
			}
			p := []byte("{\"event\":\"{\\\"timestamp\\\":1795576032.4540501,\\\"name\\\":\\\"validate\\\"}\\n\"}\x00")
			var n struct{ N int }
			_ = m.DecodeJSON(&n)
			for range n.N {
				if err := sc.send(wire.NewResponse(m, p)); err != nil {
					return
				}
			}
			_ = sc.send(wire.NewErrorResponse(m, 61, ""))
		})
	})
	c, err := Dial(context.Background(), srv.uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	start := time.Now()
	s, err := c.Stream(context.Background(), "job-info.eventlog-watch", map[string]int{"n": b.N})
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		var ev struct{ Event string }
		if err := s.Recv(&ev); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Recv(nil); err == nil {
		b.Fatal("stream did not end")
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
