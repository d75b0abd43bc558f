package broker

import (
	"k8s.io/client-go/rest"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Transports supplies the connections flux.Dial cannot make from a URI
// alone. A nil field means this manager cannot use that kind of
// connection: FluxEndpoints asking for it are reported with reason
// InvalidConnection.
type Transports struct {
	// SSH returns the dial options for an ssh:// URI, given the private
	// key and known_hosts read from the FluxEndpoint's Secret.
	SSH func(privateKey, knownHosts []byte) ([]flux.Option, error)
	// Exec returns a URI naming the connection and the dial options that
	// reach a broker by running the relay in a container through the
	// pods/exec subresource.
	Exec func(t podexec.Target) (uri string, opts []flux.Option, err error)
}

// DefaultTransports are the transports of the manager: ssh:// through
// flux.WithSSH with the key and known_hosts of the FluxEndpoint's Secret
// only (no agent, no key or known_hosts files of the manager's own), and
// pods/exec through package podexec on the API server of cfg.
func DefaultTransports(cfg *rest.Config) Transports {
	return Transports{
		SSH: func(privateKey, knownHosts []byte) ([]flux.Option, error) {
			return []flux.Option{flux.WithSSH(flux.SSHConfig{
				PrivateKeys: [][]byte{privateKey}, KnownHosts: knownHosts, NoAgent: true,
			})}, nil
		},
		Exec: func(t podexec.Target) (string, []flux.Option, error) {
			d, err := podexec.Dialer(cfg, t)
			if err != nil {
				return "", nil, err
			}
			return t.URI(), []flux.Option{flux.WithDialer(d)}, nil
		},
	}
}
