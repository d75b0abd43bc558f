// Command kubectl-fluxjob is a kubectl plugin for FluxJobs:
//
//	kubectl fluxjob logs NAME [-f] [--stdout|--stderr] [--rank N] [--index I]
//	kubectl fluxjob events NAME [-f] [--index I]
//	kubectl fluxjob indexes NAME
//	kubectl fluxjob describe NAME
//	kubectl fluxjob cancel NAME [--message TEXT]
//	kubectl fluxjob hold NAME
//	kubectl fluxjob release NAME
//
// Install it with
//
//	go install github.com/fluxjob/fluxjob-operator/cmd/kubectl-fluxjob@latest
//
// and kubectl finds it on PATH. It reads FluxJobs with the user's own
// kubeconfig and RBAC, and reaches the FluxJob's Flux instance the same way
// (instance.go): by pods/exec into the broker's container, running `flux
// relay SOCKET` there, whose stdin and stdout carry Flux's own protocol (the
// pod transport of FluxEndpoint), or by the FluxEndpoint's URI (ssh:// with
// the user's own keys). Nothing is added to the manager: no server, no
// credential.
// Whoever may exec into that container talks to Flux as the user the
// relay runs as (the instance owner in the default deployment), so grant
// pods/exec there as you would grant a shell on the Flux instance.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

func main() {
	// client-go reports through klog what it cannot return, e.g. the
	// WebSocket exec's copy loops failing on the connection this plugin
	// closed when it is done ("Copying stdout failed ... use of closed
	// network connection"): noise on the user's stderr, which carries the
	// job's stderr. Errors that matter come back as errors.
	klog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], defaultEnv(os.Stdout, os.Stderr))
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// errUsage is returned after the usage was printed.
var errUsage = errors.New("usage")

const usage = `kubectl fluxjob: FluxJobs from kubectl.

Commands:
  logs NAME      print the job's output (stdout to stdout, stderr to stderr, as flux job attach)
                 -f, --follow     keep following until the job ends (waits for it to start)
                 --stdout         only standard output
                 --stderr         only standard error
                 --rank N         only task rank N
                 --index I        of an array FluxJob: index I's job
  events NAME    print the Flux job's eventlog (-f: follow until it ends; --index I of an array)
  indexes NAME   an array FluxJob's indexes: index, Flux job ID, state, result (from Flux's job-list)
  describe NAME  the FluxJob's state, its output tail and its Kubernetes events
  cancel NAME    cancel the Flux job (--message TEXT: the reason)
  hold NAME      hold a pending job: spec.urgency 0 (the previous urgency is kept in an annotation)
  release NAME   give a held job its urgency back

Where Flux is: the FluxJob's instance (status.instance, else spec.instance, else the
default FluxEndpoint), read with your credentials (get fluxendpoints). A pod or
miniCluster instance is reached through pods/exec, a uri from this machine (ssh:// with
your own ~/.ssh and agent). The manager's implicit instance (--default-instance NAME,
default "default") is its sidecar: the pod labelled control-plane=controller-manager in
namespace fluxjob-system, container flux. Any of these flags says where Flux is instead:
  --flux-namespace NS, --flux-pod NAME or --flux-selector SELECTOR, --flux-container NAME,
  --flux-socket PATH (default /run/flux/broker/local), --flux-command CMD (default "flux relay"),
  or --flux-uri URI (local:// or ssh://, reached directly from this machine).

Kubernetes flags: --kubeconfig, --context, -n/--namespace, and kubectl's other connection flags.
`

// env is what run needs from the outside world; tests replace parts.
type env struct {
	stdout, stderr io.Writer
	// dialPod connects to the broker through pods/exec (nil: the pod
	// transport is not built in).
	dialPod podDialer
}

func defaultEnv(stdout, stderr io.Writer) env {
	return env{stdout: stdout, stderr: stderr, dialPod: execDialer}
}

// run parses args and runs one command.
func run(ctx context.Context, args []string, e env) error {
	o, err := parseArgs(args, e.stderr)
	if err != nil {
		return err
	}
	cl, err := o.kube()
	if err != nil {
		return err
	}
	a := &app{opts: o, kube: cl, env: e}
	switch o.command {
	case "logs":
		return a.logs(ctx)
	case "events":
		return a.events(ctx)
	case "indexes":
		return a.indexes(ctx)
	case "describe":
		return a.describe(ctx)
	case "cancel":
		return a.cancel(ctx)
	case "hold":
		return a.hold(ctx)
	case "release":
		return a.release(ctx)
	}
	return fmt.Errorf("unknown command %q (logs, events, indexes, describe, cancel, hold, release)", o.command)
}
