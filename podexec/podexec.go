// Package podexec reaches a Flux broker that runs in a Kubernetes pod: it
// runs `flux relay SOCKET` in one of the pod's containers through the
// pods/exec subresource and hands the relay's standard input and output to
// fluxbridge/flux as the broker stream (flux.Dialer). This is how
// flux-operator's own Python SDK reaches a MiniCluster (an exec without a
// TTY); the relay connects to the broker's local:// socket as the
// container's user, so whoever may exec into the pod gets that user's
// rights at the broker (often the instance owner). pods/exec is the
// security boundary.
//
// The exec goes through client-go's remotecommand: WebSocket (protocol
// v5.channel.k8s.io) first, SPDY when the WebSocket upgrade is refused
// (older API servers, proxies), as kubectl exec does. The TTY is off (a
// TTY would translate the protocol's bytes); stdin and stdout carry the
// protocol and stderr is kept for diagnostics.
package podexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/fluxjob/fluxjob-operator/fluxbridge/flux"
	"github.com/fluxjob/fluxjob-operator/internal/tail"
)

const (
	// DefaultSocketPath is the lead broker's socket in a flux-operator
	// MiniCluster (its spec.flux mount path, /mnt/flux by default, then
	// config/run/flux/local).
	DefaultSocketPath = "/mnt/flux/config/run/flux/local"
	// FluxViewScript is the script a flux-operator MiniCluster container
	// sources to put flux on PATH (flux is not on PATH in a bare exec).
	FluxViewScript = "/mnt/flux/flux-view.sh"
)

// DefaultCommand runs the relay with /bin/sh: it sources FluxViewScript
// when the container has it (its output kept off stdout, which carries
// the protocol) and then replaces itself with `flux relay`; the socket
// path, appended as the last argument, is the shell's $0. It works in a
// MiniCluster and in any container with flux on PATH.
var DefaultCommand = []string{"/bin/sh", "-c", `if [ -f ` + FluxViewScript + ` ]; then . ` + FluxViewScript + ` >/dev/null; fi; exec flux relay "$0"`}

// Target is the container a broker is reached in: the pod, the container and
// the relay command. The manager, brokerpod and the kubectl plugin share it.
type Target struct {
	// Namespace and Pod name the pod; both are required.
	Namespace, Pod string
	// PodUID is the pod's UID when known: a new pod (a re-created
	// MiniCluster) is a new target. Dialling does not use it.
	PodUID string
	// Container is the container to exec in; empty means the pod's only
	// (or default) container, as the API server chooses.
	Container string
	// SocketPath is the broker's socket in the container; empty means
	// DefaultSocketPath.
	SocketPath string
	// Command is the relay command without the socket path, which is
	// appended as its last argument; empty means DefaultCommand.
	Command []string
}

// Validate reports missing or malformed options.
func (o Target) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("no namespace"))
	}
	if o.Pod == "" {
		errs = append(errs, errors.New("no pod name"))
	}
	if o.SocketPath != "" && !strings.HasPrefix(o.SocketPath, "/") {
		errs = append(errs, fmt.Errorf("socket path %q is not absolute", o.SocketPath))
	}
	if len(o.Command) > 0 && o.Command[0] == "" {
		errs = append(errs, errors.New("the command has an empty program name"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("podexec: %w", err)
	}
	return nil
}

// argv returns the command run in the container.
func (o Target) argv() []string {
	cmd := o.Command
	if len(cmd) == 0 {
		cmd = DefaultCommand
	}
	sock := o.SocketPath
	if sock == "" {
		sock = DefaultSocketPath
	}
	return append(append([]string(nil), cmd...), sock)
}

// URI names the connection: pod://NAMESPACE/POD[/CONTAINER]. It is not
// dialled (flux.Dial with WithDialer only passes it on), it only names
// the Conn in errors and logs.
func (o Target) URI() string {
	u := "pod://" + o.Namespace + "/" + o.Pod
	if o.Container != "" {
		u += "/" + o.Container
	}
	return u
}

// ExecURL returns the URL of the pod's exec subresource for the options,
// on the API server of cfg.
func ExecURL(cfg *rest.Config, o Target) (*url.URL, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(runtime.NewScheme()).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("podexec: %w", err)
	}
	q := url.Values{}
	for _, a := range o.argv() {
		q.Add("command", a)
	}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	q.Set("stdin", "true")
	q.Set("stdout", "true")
	q.Set("stderr", "true")
	q.Set("tty", "false")
	u := rc.Post().Namespace(o.Namespace).Resource("pods").Name(o.Pod).SubResource("exec").URL()
	u.RawQuery = q.Encode()
	return u, nil
}

// Dialer returns a flux.Dialer that execs the relay in the pod; every
// call is a new exec (a new relay process). Use it with flux.WithDialer
// and Target.URI:
//
//	d, err := podexec.Dialer(cfg, opts)
//	c, err := flux.Dial(ctx, opts.URI(), flux.WithDialer(d))
//
// The user of cfg needs create on pods/exec in the pod's namespace, and
// get too for older API servers: a WebSocket exec is a GET and an SPDY
// one a POST, and Kubernetes 1.37 authorises both as create (checked in
// TestExecThroughAPIServer: get alone is refused).
func Dialer(cfg *rest.Config, o Target) (flux.Dialer, error) {
	u, err := ExecURL(cfg, o)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, _ string) (io.ReadWriteCloser, error) {
		return Open(ctx, cfg, u)
	}, nil
}

// NewExecutor returns client-go's executor for an exec URL: WebSocket
// first, SPDY when the upgrade fails, as kubectl exec does
// (k8s.io/kubectl/pkg/cmd/exec createExecutor).
func NewExecutor(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return nil, fmt.Errorf("podexec: %w", err)
	}
	// RFC 6455: a WebSocket upgrade is a GET
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	if err != nil {
		return nil, fmt.Errorf("podexec: %w", err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, fmt.Errorf("podexec: %w", err)
	}
	return ex, nil
}

// Open starts the exec at u (an exec subresource URL, or any URL that
// serves the exec protocol) and returns its standard input and output as
// a stream that keeps its standard error (flux.StderrStream). ctx bounds
// nothing after Open returns: the exec lasts until the stream is closed
// or the command ends. Open does not wait for the exec to be established;
// a failure to establish it ends the stream, with the reason as the
// error of Read (and Dial's error).
func Open(ctx context.Context, cfg *rest.Config, u *url.URL) (*Stream, error) {
	ex, err := NewExecutor(cfg, u)
	if err != nil {
		return nil, err
	}
	return Start(ctx, ex, u.Path)
}

// Start is Open with a given executor; name (the exec's URL path) is for
// errors.
func Start(ctx context.Context, ex remotecommand.Executor, name string) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The exec's own context: Close cancels it.
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &Stream{in: inW, out: outR, inR: inR, cancel: cancel, stderr: &tail.Buffer{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		err := ex.StreamWithContext(ectx, remotecommand.StreamOptions{
			Stdin:  inR,
			Stdout: outW,
			Stderr: s.stderr,
			Tty:    false,
		})
		if err == nil {
			err = io.EOF
		} else {
			err = fmt.Errorf("podexec: exec %s: %w", name, err)
		}
		s.err = err
		outW.CloseWithError(err)
		inR.CloseWithError(err)
	}()
	return s, nil
}

// Stream is the relay's standard input (Write) and output (Read) in a
// running exec. Close ends the exec.
type Stream struct {
	in     *io.PipeWriter
	inR    *io.PipeReader
	out    *io.PipeReader
	cancel context.CancelFunc
	stderr *tail.Buffer

	done chan struct{} // closed when the exec ended
	err  error         // how it ended (io.EOF: the command exited 0); set before done closes
	once sync.Once
}

// Read reads the command's standard output.
func (s *Stream) Read(p []byte) (int, error) { return s.out.Read(p) }

// Write writes to the command's standard input.
func (s *Stream) Write(p []byte) (int, error) { return s.in.Write(p) }

// Close ends the exec (the relay sees its standard input close; the
// connection is torn down) and waits for client-go's goroutine.
func (s *Stream) Close() error {
	s.once.Do(func() {
		_ = s.in.Close()
		_ = s.out.Close()
		s.cancel()
	})
	<-s.done
	return nil
}

// Stderr waits for the exec to end or ctx to end and returns the
// command's standard error (flux.StderrStream).
func (s *Stream) Stderr(ctx context.Context) string {
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	return s.stderr.String()
}
