package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Where the operator's default deployment (config/default) runs Flux: the
// sidecar container "flux" of the manager pod, its socket in an emptyDir
// (config/manager/manager.yaml).
const (
	defaultFluxNamespace = "fluxjob-system"
	defaultFluxSelector  = "control-plane=controller-manager"
	defaultFluxContainer = "flux"
	defaultFluxSocket    = "/run/flux/broker/local"
	defaultFluxCommand   = "flux relay"
)

// brokerTarget says where the Flux broker is: a container to exec the
// relay in, or a URI this machine can dial itself.
type brokerTarget struct {
	URI       string
	Namespace string
	Pod       string
	Selector  string
	Container string
	Socket    string
	Command   string
	// Implicit is the name the manager gives its implicit instance (its
	// --default-instance): a FluxJob on it is reached at the sidecar
	// these flags describe.
	Implicit string
	// Explicit is set when any of the --flux-* flags was given: they then
	// say where Flux is, and the FluxJob's instance is not looked up.
	Explicit bool
}

// brokerFlags are the flags of brokerTarget that name a broker.
var brokerFlags = []string{"flux-uri", "flux-namespace", "flux-pod", "flux-selector", "flux-container", "flux-socket", "flux-command"}

func (t *brokerTarget) bindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&t.URI, "flux-uri", "", "dial Flux directly (local:// or ssh://) instead of through a pod")
	fs.StringVar(&t.Namespace, "flux-namespace", defaultFluxNamespace, "namespace of the Flux broker's pod")
	fs.StringVar(&t.Pod, "flux-pod", "", "the Flux broker's pod (default: found with --flux-selector)")
	fs.StringVar(&t.Selector, "flux-selector", defaultFluxSelector, "label selector of the Flux broker's pod")
	fs.StringVar(&t.Container, "flux-container", defaultFluxContainer, "the container running the broker")
	fs.StringVar(&t.Socket, "flux-socket", defaultFluxSocket, "the broker's local:// socket in that container")
	fs.StringVar(&t.Command, "flux-command", defaultFluxCommand, "the relay command run in the container (the socket is appended)")
	fs.StringVar(&t.Implicit, "default-instance", "default", "the name of the manager's implicit instance (its --default-instance), reached at the sidecar")
}

func (t *brokerTarget) check() error {
	if t.URI != "" {
		return nil
	}
	if t.Pod == "" {
		if _, err := labels.Parse(t.Selector); err != nil {
			return fmt.Errorf("--flux-selector: %w", err)
		}
	}
	if len(strings.Fields(t.Command)) == 0 {
		return errors.New("--flux-command is empty")
	}
	return nil
}

// podDialer connects to the broker by running the relay in a container
// through pods/exec.
type podDialer func(ctx context.Context, cfg *rest.Config, t podexec.Target) (*flux.Conn, error)

// execDialer is the pods/exec transport built into the plugin (see
// podexec.go); nil when this build has none.
var execDialer podDialer

// dialFlux connects to the Flux broker of obj (see brokerFor).
func (a *app) dialFlux(ctx context.Context, obj *fluxjobv1.FluxJob) (*flux.Conn, error) {
	b, err := a.brokerFor(ctx, obj)
	if err != nil {
		return nil, err
	}
	if b.uri != "" {
		// ssh:// with the user's own agent, ~/.ssh keys and known_hosts
		// (flux.SSHConfig's defaults), never the manager's Secret
		c, err := flux.Dial(ctx, b.uri)
		if err != nil {
			return nil, fmt.Errorf("connecting to Flux at %s%s: %w", b.uri, b.via, err)
		}
		return c, nil
	}
	pt := b.pod
	if a.env.dialPod == nil {
		return nil, errors.New("this build of kubectl-fluxjob has no pods/exec transport; use --flux-uri")
	}
	c, err := a.env.dialPod(ctx, a.kube.cfg, pt)
	if err != nil {
		cmd := pt.Command
		if len(cmd) == 0 {
			cmd = []string{"<the default relay command>"}
		}
		return nil, fmt.Errorf("connecting to Flux in pod %s/%s container %s%s (pods/exec %s): %w",
			pt.Namespace, pt.Pod, pt.Container, b.via, strings.Join(append(append([]string(nil), cmd...), pt.SocketPath), " "), err)
	}
	return c, nil
}

// flagBroker is the broker the --flux-* flags (or their defaults: the
// operator's sidecar) name.
func (a *app) flagBroker(ctx context.Context) (broker, error) {
	t := a.opts.target
	if t.URI != "" {
		return broker{uri: t.URI}, nil
	}
	pt := podexec.Target{Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, SocketPath: t.Socket, Command: strings.Fields(t.Command)}
	if pt.Pod == "" {
		pod, err := a.findPod(ctx, t.Namespace, t.Selector)
		if err != nil {
			return broker{}, err
		}
		pt.Pod = pod
	}
	return broker{pod: pt}, nil
}

// findPod picks a running pod matching selector.
func (a *app) findPod(ctx context.Context, ns, selector string) (string, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return "", fmt.Errorf("--flux-selector: %w", err)
	}
	var pods corev1.PodList
	if err := a.kube.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return "", fmt.Errorf("finding the Flux broker's pod (%s in namespace %s): %w", selector, ns, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("no running pod with labels %s in namespace %s (--flux-pod, --flux-selector, --flux-namespace say where Flux runs)", selector, ns)
}

// scheme knows FluxJobs and the core types.
func scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := fluxjobv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}
