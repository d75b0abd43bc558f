package controllers

import (
	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// DefaultTransports are the transports of the manager: ssh:// through
// flux.WithSSH with the key and known_hosts of the FluxInstance's Secret
// only (no agent, no key or known_hosts files of the manager's own), and
// pods/exec through package podexec on the API server of cfg.
func DefaultTransports(cfg *rest.Config) Transports {
	return Transports{
		SSH: func(privateKey, knownHosts []byte) ([]flux.Option, error) {
			return []flux.Option{flux.WithSSH(flux.SSHConfig{
				PrivateKeys: [][]byte{privateKey}, KnownHosts: knownHosts, NoAgent: true,
			})}, nil
		},
		Exec: func(t ExecTarget) (string, []flux.Option, error) {
			o := podexec.Options{Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, SocketPath: t.SocketPath, Command: t.Command}
			d, err := podexec.Dialer(cfg, o)
			if err != nil {
				return "", nil, err
			}
			return o.URI(), []flux.Option{flux.WithDialer(d)}, nil
		},
	}
}
