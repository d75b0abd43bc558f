package fluxbridge

import (
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux/fluxtest"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/testbroker"
)

// sshToBroker starts an in-process SSH server whose sessions run the
// relay to srv's socket in-process, and returns the ssh:// URI of srv
// through it and a client configuration it accepts.
func sshToBroker(t testing.TB, srv *testbroker.Server) (string, flux.SSHConfig, *fluxtest.SSHServer) {
	t.Helper()
	key, keyPEM, err := fluxtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	sshd, err := fluxtest.StartSSHServer(fluxtest.SSHServerOptions{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sshd.Close)
	sock, err := fluxtest.SocketPath(srv.URI())
	if err != nil {
		t.Fatal(err)
	}
	cfg := flux.SSHConfig{PrivateKeys: [][]byte{keyPEM}, KnownHosts: sshd.KnownHosts, NoAgent: true}
	return sshd.URI("alice", sock), cfg, sshd
}

// TestExecutorOverSSH: the executor's contract over ssh:// (each worker
// its own SSH session running the relay): jobs complete with their
// results, and attaching to a finished job gives the same, with either
// event source.
func TestExecutorOverSSH(t *testing.T) {
	forEachSource(t, func(t *testing.T, src EventSource) {
		srv := startBroker(t, testbroker.Options{})
		uri, cfg, sshd := sshToBroker(t, srv)
		e := newTestExecutorURI(t, uri, execConfig{workers: 2, src: src, dialOpts: []flux.Option{flux.WithSSH(cfg)}})
		ctx := testCtx(t)
		tests := []struct {
			cmd  []string
			want int
		}{
			{[]string{"true"}, 0},
			{[]string{"false"}, 1},
			{[]string{"exit", "3"}, 3},
			{[]string{"sleep", "5"}, 0},
		}
		var futures []*Future
		for _, tt := range tests {
			futures = append(futures, submit(t, e, tt.cmd...))
		}
		for i, tt := range tests {
			if got, err := futures[i].Result(ctx); err != nil || got != tt.want {
				t.Fatalf("%v: Result = %d, %v; want %d", tt.cmd, got, err, tt.want)
			}
			id, err := futures[i].JobID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a, err := e.Attach(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := a.Result(ctx); err != nil || got != tt.want {
				t.Errorf("%v: attached Result = %d, %v; want %d", tt.cmd, got, err, tt.want)
			}
		}
		if n := len(sshd.Commands()); n != 2 {
			t.Errorf("%d SSH sessions ran the relay, want one per worker (2)", n)
		}
	})
}
