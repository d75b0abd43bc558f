package main

import (
	"context"

	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

func init() { execDialer = dialPodExec }

// dialPodExec runs the relay in the container through pods/exec with the
// user's own credentials (package podexec: WebSocket, then SPDY; no TTY).
func dialPodExec(ctx context.Context, cfg *rest.Config, t podexec.Target) (*flux.Conn, error) {
	o := t
	d, err := podexec.Dialer(cfg, o)
	if err != nil {
		return nil, err
	}
	return flux.Dial(ctx, o.URI(), flux.WithDialer(d))
}
