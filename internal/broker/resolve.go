package broker

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Reaching a broker in a pod needs to find the pod, check its owners and
// exec into it. The manager's generated ClusterRole grants none of that:
// config/components/pod-exec grants brokerpod.Rules through RoleBindings in
// the namespaces it lists, which the manager is told with
// --exec-namespaces (Resolver.ExecNamespaces); a FluxEndpoint naming another
// namespace is refused before any pod is read (execAllowed).

// Resolver turns a FluxEndpoint's spec.connection into the Config of its
// connection: it reads the ssh Secret (in the manager's namespace only) and
// finds the broker pod (internal/brokerpod, by ownership), under the exec
// policy the manager was started with.
type Resolver struct {
	// Reader reads Secrets and Pods directly from the API server.
	Reader client.Reader
	// Namespace is the manager's own namespace, the only one Secrets
	// are read from.
	Namespace string
	// Transports are the ssh and pod-exec transports available.
	Transports Transports
	// ExecNamespaces are the namespaces miniCluster and pod connections
	// may name (--exec-namespaces); empty: none.
	ExecNamespaces []string
	// AllowExecCommand lets those connections replace the relay command.
	AllowExecCommand bool
}

// Resolve resolves fi's spec into a Config; a connection that cannot be
// used is returned with Invalid set, and with a condition reason when it
// is refused by policy rather than invalid (else ""). endpoint describes
// where the connection goes, for the status.
func (r Resolver) Resolve(ctx context.Context, fi *fluxjobv1.FluxEndpoint) (cfg Config, endpoint, reason string) {
	cfg.Workers = int(fluxjobv1.DefaultInstanceWorkers)
	if w := fi.Spec.Executor.Workers; w != nil {
		cfg.Workers = int(*w)
	}
	if fi.Spec.Executor.EventSource == fluxjobv1.EventSourceJournal {
		cfg.EventSource = fluxbridge.EventSourceJournal
	}
	if n := fi.Spec.Executor.MaxMessageBytes; n != nil {
		cfg.MaxMessageSize = int(*n)
	}
	if d := fi.Spec.Executor.Keepalive; d != nil {
		cfg.Keepalive = d.Duration
	}
	if d := fi.Spec.Executor.KeepaliveTimeout; d != nil {
		cfg.KeepaliveTimeout = d.Duration
	}
	cfg.Default = fi.IsDefault()
	if sel := fi.Spec.NamespaceSelector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			cfg.Invalid = "spec.namespaceSelector: " + err.Error()
			return cfg, "", ""
		}
		cfg.Selector = s
	}
	c := fi.Spec.Connection
	var ident []string // what the connection depends on, for cfg.Key
	var err error
	switch {
	case c.URI != "" && c.SecretRef != nil:
		endpoint = c.URI
		cfg.URI = c.URI
		var secretVersion string
		cfg.DialOptions, secretVersion, err = r.sshOptions(ctx, c.SecretRef.Name)
		ident = []string{"uri", c.URI, "secret", c.SecretRef.Name, secretVersion}
	case c.URI != "":
		endpoint, cfg.URI = c.URI, c.URI
		ident = []string{"uri", c.URI}
	case c.MiniCluster != nil || c.Pod != nil:
		if reason, msg := r.execAllowed(c); reason != "" {
			cfg.Invalid = msg
			return cfg, endpoint, reason
		}
		var t podexec.Target
		// The target carries the pod's UID: a new pod (the MiniCluster
		// was re-created) makes a new connection.
		t, err = brokerpod.Find(ctx, r.Reader, c)
		if err == nil {
			endpoint = t.Namespace + "/" + t.Pod + "/" + t.Container + ":" + t.SocketPath
			ident = append([]string{"exec", t.Namespace, t.Pod, t.PodUID, t.Container, t.SocketPath}, t.Command...)
			if r.Transports.Exec == nil {
				err = fmt.Errorf("this manager was built without the pod-exec transport")
			} else {
				cfg.URI, cfg.DialOptions, err = r.Transports.Exec(t)
			}
		}
	default:
		err = fmt.Errorf("spec.connection has none of uri, miniCluster and pod")
	}
	if err == nil && len(fi.Spec.Accounts) > 0 {
		var accountIdent []string
		cfg.Accounts, accountIdent, err = r.resolveAccounts(ctx, fi)
		ident = append(ident, accountIdent...)
		cfg.Unmapped = fi.Spec.UnmappedNamespaces
	}
	if err != nil {
		cfg.Invalid = err.Error()
		return cfg, endpoint, ""
	}
	ident = append(ident, "workers", strconv.Itoa(cfg.Workers), "events", strconv.Itoa(int(cfg.EventSource)),
		"max", strconv.Itoa(cfg.MaxMessageSize), "keepalive", cfg.Keepalive.String(), cfg.KeepaliveTimeout.String())
	sum := sha256.New()
	for _, s := range ident {
		sum.Write([]byte(s))
		sum.Write([]byte{0})
	}
	cfg.Key = hex.EncodeToString(sum.Sum(nil))
	return cfg, endpoint, ""
}

// execAllowed checks a miniCluster or pod connection against the exec
// policy (ExecNamespaces, AllowExecCommand) before anything is read or
// exec'd; it returns the condition reason and message of a refusal, or
// "" when the connection may be used.
func (r Resolver) execAllowed(c fluxjobv1.FluxEndpointConnection) (reason, msg string) {
	field, ns, command := "spec.connection.pod", "", []string(nil)
	if c.MiniCluster != nil {
		field, ns, command = "spec.connection.miniCluster", c.MiniCluster.Namespace, c.MiniCluster.Command
	} else if c.Pod != nil {
		ns, command = c.Pod.Namespace, c.Pod.Command
	}
	if !slices.Contains(r.ExecNamespaces, ns) {
		if len(r.ExecNamespaces) == 0 {
			return fluxjobv1.ReasonExecNamespaceNotAllowed, fmt.Sprintf("%s.namespace %q: this manager reaches no broker through pods/exec "+
				"(--exec-namespaces is empty, the default install); install config/components/pod-exec with this namespace in its list", field, ns)
		}
		return fluxjobv1.ReasonExecNamespaceNotAllowed, fmt.Sprintf("%s.namespace %q is not one of this manager's exec namespaces (--exec-namespaces=%s); "+
			"add it to the list of config/components/pod-exec", field, ns, strings.Join(r.ExecNamespaces, ","))
	}
	if len(command) > 0 && !r.AllowExecCommand {
		return fluxjobv1.ReasonExecCommandNotAllowed, fmt.Sprintf("%s.command is set, and this manager runs only its own relay command in a pod "+
			"(start it with --allow-exec-command to run the FluxEndpoint's command as the container's user)", field)
	}
	return "", ""
}

// sshOptions reads the Secret name in the manager's namespace and returns
// the ssh transport's dial options and the Secret's resourceVersion (a
// rotated key makes a new connection).
func (r Resolver) sshOptions(ctx context.Context, name string) ([]flux.Option, string, error) {
	opts, sec, err := r.sshSecret(ctx, name)
	if err != nil {
		return nil, "", err
	}
	return opts, sec.ResourceVersion, nil
}

// sshSecret is sshOptions, returning the Secret read.
func (r Resolver) sshSecret(ctx context.Context, name string) ([]flux.Option, *corev1.Secret, error) {
	if r.Transports.SSH == nil {
		return nil, nil, fmt.Errorf("this manager was built without the ssh transport")
	}
	if r.Namespace == "" {
		return nil, nil, fmt.Errorf("the manager's namespace is not known (set POD_NAMESPACE or --manager-namespace): it is the only namespace ssh Secrets are read from")
	}
	var sec corev1.Secret
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, &sec); err != nil {
		return nil, nil, fmt.Errorf("reading Secret %s/%s: %w", r.Namespace, name, err)
	}
	key, kh := sec.Data[fluxjobv1.SSHPrivateKeyKey], sec.Data[fluxjobv1.SSHKnownHostsKey]
	if len(key) == 0 || len(kh) == 0 {
		return nil, nil, fmt.Errorf("ssh Secret %s/%s must have non-empty keys %q and %q", r.Namespace, name, fluxjobv1.SSHPrivateKeyKey, fluxjobv1.SSHKnownHostsKey)
	}
	opts, err := r.Transports.SSH(key, kh)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh Secret %s/%s: %w", r.Namespace, name, err)
	}
	return opts, &sec, nil
}
