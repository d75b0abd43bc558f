package broker

import (
	"fmt"

	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
)

// Route is the Flux instance a FluxJob was resolved to: its name and its
// connector. The controller resolves it once per reconcile (Registry.Route)
// and passes it to every verb, so that submission, attach, identity checks
// and the output read all use the same instance even if the default
// instance changes meanwhile.
type Route struct {
	// Name is the FluxEndpoint's name ("" if none could be chosen).
	Name string
	// Account is the account (spec.accounts) the route submits as; ""
	// for the instance's own connection.
	Account string
	// conn is the instance's connector, or the account's; nil if the
	// instance is unknown or its connection settings are invalid, or the
	// namespace has no account (why says which).
	conn *Connector
	// main is the instance's own connector on an account's route.
	main *Connector
	why  string
}

// Unroutable is a Route to no instance, for the reason why.
func Unroutable(name, why string) Route { return Route{Name: name, why: why} }

// Route returns the route to the instance called name.
func (r *Registry) Route(name string) Route {
	conn, cfg, ok := r.Lookup(name)
	switch {
	case !ok:
		return Route{Name: name, why: fmt.Sprintf("FluxEndpoint %q does not exist", name)}
	case conn == nil:
		return Route{Name: name, why: fmt.Sprintf("FluxEndpoint %q cannot be used: %s", name, cfg.Invalid)}
	}
	return Route{Name: name, conn: conn}
}

// Get returns the instance's executor and control connection, or an
// error wrapping ErrUnreachable.
func (rt Route) Get() (*fluxbridge.Executor, *flux.Conn, error) {
	if rt.conn == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrUnreachable, rt.why)
	}
	return rt.conn.Get()
}

// State is Connector.State for the instance; an unusable instance is
// unreachable.
func (rt Route) State() (connected bool, unreachable string) {
	if rt.conn == nil {
		return false, rt.why
	}
	return rt.conn.State()
}

// InstanceID is the identity of the instance's Flux instance (see
// InstanceIdentity), "" if not connected or unknown.
func (rt Route) InstanceID() string {
	if rt.conn == nil {
		return ""
	}
	if id := rt.conn.InstanceID(); id != "" || rt.main == nil {
		return id
	}
	// An account is a guest, which may not read the KVS: the identity
	// is the one the instance's own connection read, if it could.
	return rt.main.InstanceID()
}
