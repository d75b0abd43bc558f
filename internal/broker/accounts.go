package broker

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/sign"
)

// Accounts
//
// A FluxEndpoint's spec.accounts map namespaces to accounts: SSH
// identities (Secrets of the manager's namespace) that log in to the
// endpoint's host as users of the centre. Each account gets its own
// Connector (an executor and a control connection over its own SSH
// connection), and signs every jobspec with munge through that SSH
// connection (ConnectorOptions.MungeSocket), so that the job's Flux
// userid is the account's. A FluxJob's account is chosen by
// Registry.RouteFor from its namespace's labels and the FluxEndpoint
// only; the Route then carries that account's connector to every verb
// (submit, attach, cancel, urgency, output), so each job is followed and
// acted on as the user it belongs to. An account is a guest of the
// instance: its connection never uses the owner-only journal, and the
// owner-only submission options are refused before submission
// (controllers/accounts.go, job.GuestRefusal).

// AccountConfig is one account of an instance: the namespaces it serves
// and how its connection logs in.
type AccountConfig struct {
	// Name is the account's name (spec.accounts[].name).
	Name string
	// Selector selects the namespaces that submit as this account.
	Selector labels.Selector
	// URI is the endpoint's ssh:// URI with the account's user.
	URI string
	// DialOptions carry the account's SSH identity.
	DialOptions []flux.Option
	// MungeSocket is munged's socket on the endpoint's host (munge
	// signing).
	MungeSocket string
	// Curve is the account's curve certificate, with its secret key
	// (curve signing, instead of munge).
	Curve *sign.Cert
	// Key identifies the connection settings (URI, Secret version, socket).
	Key string
}

func (a AccountConfig) key() string {
	if a.Key != "" {
		return a.Name + "|" + a.Key
	}
	k := a.Name + "|" + a.URI + "|" + a.MungeSocket
	if a.Curve != nil {
		k += "|curve|" + string(a.Curve.MarshalPublic())
	}
	return k
}

// accountLabel is an account connector's instance label in metrics and logs.
func accountLabel(instance, account string) string { return instance + "/" + account }

// connectorOptions are the options of the account's connector: the
// instance's (base), with the account's login, munge signing, and the
// eventlog event source (the journal is the owner's only).
func (a AccountConfig) connectorOptions(base ConnectorOptions, log logr.Logger, instance string) ConnectorOptions {
	o := base
	o.URI, o.DialOptions, o.MungeSocket, o.Curve = a.URI, a.DialOptions, a.MungeSocket, a.Curve
	o.EventSource = fluxbridge.EventSourceEventlog
	o.Instance = accountLabel(instance, a.Name)
	o.Logger = log.WithValues("instance", instance, "account", a.Name)
	return o
}

// sameMapping reports whether a and b map namespaces to accounts alike.
func sameMapping(a, b Config) bool {
	if a.Unmapped != b.Unmapped || len(a.Accounts) != len(b.Accounts) {
		return false
	}
	for i := range a.Accounts {
		if a.Accounts[i].Name != b.Accounts[i].Name || selectorString(a.Accounts[i].Selector) != selectorString(b.Accounts[i].Selector) {
			return false
		}
	}
	return true
}

// AccountRefusal is why a namespace has no account on an instance.
type AccountRefusal struct {
	// Reason is the FluxJob condition reason (ReasonNoAccount).
	Reason string
	// Message says which FluxEndpoint and namespace.
	Message string
}

// RouteFor returns the route of a FluxJob of namespace ns (with labels
// nsLabels) on the instance name: the connector of the first account
// whose selector selects ns, else the instance's own connector when the
// instance has no accounts or its policy sends unmapped namespaces
// there; otherwise a refusal (the route is then unusable). The instance
// must exist (Lookup); an unknown one gives Route(name).
func (r *Registry) RouteFor(name, ns string, nsLabels labels.Set) (Route, *AccountRefusal) {
	r.mu.RLock()
	e := r.entries[name]
	if e == nil || len(e.cfg.Accounts) == 0 || e.conn == nil {
		r.mu.RUnlock()
		return r.Route(name), nil
	}
	cfg, accounts, main := e.cfg, e.accounts, e.conn
	r.mu.RUnlock()
	for i, a := range cfg.Accounts {
		if a.Selector != nil && a.Selector.Matches(nsLabels) {
			return Route{Name: name, Account: a.Name, conn: accounts[i], main: main}, nil
		}
	}
	if cfg.Unmapped == fluxjobv1.UnmappedEndpointConnection {
		return Route{Name: name, conn: main}, nil
	}
	msg := fmt.Sprintf("FluxEndpoint %q maps no account to namespace %q (no spec.accounts[].namespaceSelector selects it, and spec.unmappedNamespaces is Refuse); the FluxJob waits", name, ns)
	return Route{Name: name, why: msg}, &AccountRefusal{Reason: fluxjobv1.ReasonNoAccount, Message: msg}
}

// HasAccounts reports whether the instance name maps namespaces to
// accounts (so that routing it needs the namespace's labels).
func (r *Registry) HasAccounts(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[name]
	return e != nil && len(e.cfg.Accounts) > 0
}

// AccountStates returns the state of each account connection of the
// instance name, for its status.
func (r *Registry) AccountStates(name string) []fluxjobv1.FluxEndpointAccountStatus {
	r.mu.RLock()
	e := r.entries[name]
	if e == nil || e.conn == nil {
		r.mu.RUnlock()
		return nil
	}
	cfg, accounts := e.cfg, e.accounts
	r.mu.RUnlock()
	out := make([]fluxjobv1.FluxEndpointAccountStatus, 0, len(accounts))
	for i, c := range accounts {
		st := fluxjobv1.FluxEndpointAccountStatus{Name: cfg.Accounts[i].Name}
		st.Connected, st.Message = c.State()
		if uid := c.SignerUID(); uid >= 0 {
			st.UserID = &uid
		}
		st.Message = fluxjobv1.Clip(st.Message, 1024)
		out = append(out, st)
	}
	return out
}

// curveCert reads a curve account's certificate from its Secret: it must
// carry the uid it was issued for (a CA's "userid"), which the envelope
// claims.
func curveCert(sec *corev1.Secret) (*sign.Cert, error) {
	pub, key := sec.Data[fluxjobv1.CurveCertKey], sec.Data[fluxjobv1.CurveKeyKey]
	if len(pub) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("Secret %s/%s must have non-empty keys %q and %q for curve signing", sec.Namespace, sec.Name, fluxjobv1.CurveCertKey, fluxjobv1.CurveKeyKey)
	}
	c, err := sign.ParseCert(pub, key)
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	if _, ok := c.UserID(); !ok {
		return nil, fmt.Errorf("Secret %s/%s: the curve certificate has no \"userid\" (a CA issues one for a uid; that is the uid the jobs claim)", sec.Namespace, sec.Name)
	}
	return c, nil
}

// accountURI is the endpoint's ssh:// URI logged in as user (the URI's
// own user when empty).
func accountURI(endpoint, user string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "ssh" {
		return "", fmt.Errorf("spec.accounts needs an ssh:// spec.connection.uri, not %q", endpoint)
	}
	if user != "" {
		u.User = url.User(user)
	}
	return u.String(), nil
}

// resolveAccounts resolves fi's spec.accounts: each account's Secret is
// read in the manager's namespace. ident gains what the connections
// depend on.
func (r Resolver) resolveAccounts(ctx context.Context, fi *fluxjobv1.FluxEndpoint) ([]AccountConfig, []string, error) {
	var out []AccountConfig
	var ident []string
	for _, a := range fi.Spec.Accounts {
		sel, err := metav1.LabelSelectorAsSelector(&a.NamespaceSelector)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.accounts[%s].namespaceSelector: %w", a.Name, err)
		}
		uri, err := accountURI(fi.Spec.Connection.URI, a.User)
		if err != nil {
			return nil, nil, err
		}
		opts, sec, err := r.sshSecret(ctx, a.SecretRef.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.accounts[%s]: %w", a.Name, err)
		}
		ac := AccountConfig{Name: a.Name, Selector: sel, URI: uri, DialOptions: opts}
		if a.Signing == fluxjobv1.SigningCurve {
			if ac.Curve, err = curveCert(sec); err != nil {
				return nil, nil, fmt.Errorf("spec.accounts[%s]: %w", a.Name, err)
			}
		} else if ac.MungeSocket = a.MungeSocket; ac.MungeSocket == "" {
			ac.MungeSocket = fluxjobv1.DefaultMungeSocket
		}
		ac.Key = strings.Join([]string{uri, a.SecretRef.Name, sec.ResourceVersion, ac.MungeSocket, string(a.Signing)}, "\x00")
		out = append(out, ac)
		ident = append(ident, "account", a.Name, ac.Key)
	}
	return out, ident, nil
}
