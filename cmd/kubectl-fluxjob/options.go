package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// options are the parsed command line.
type options struct {
	command string
	name    string

	// logs, events
	follow     bool
	onlyStdout bool
	onlyStderr bool
	rank       int // -1: every rank
	index      int // an array's index; -1: none
	// cancel
	message string

	target brokerTarget

	loading   *clientcmd.ClientConfigLoadingRules
	overrides *clientcmd.ConfigOverrides
}

// commandFlags are the flags each command accepts besides the global ones.
var commandFlags = map[string][]string{
	"logs":     {"follow", "stdout", "stderr", "rank", "index"},
	"events":   {"follow", "index"},
	"indexes":  nil,
	"describe": nil,
	"cancel":   {"message"},
	"hold":     nil,
	"release":  nil,
}

// parseArgs reads `COMMAND NAME [flags]` (flags may come anywhere).
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{
		rank:      -1,
		index:     -1,
		loading:   clientcmd.NewDefaultClientConfigLoadingRules(),
		overrides: &clientcmd.ConfigOverrides{},
	}
	fs := pflag.NewFlagSet("kubectl fluxjob", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.BoolVarP(&o.follow, "follow", "f", false, "follow until the job ends")
	fs.BoolVar(&o.onlyStdout, "stdout", false, "only standard output")
	fs.BoolVar(&o.onlyStderr, "stderr", false, "only standard error")
	fs.IntVar(&o.rank, "rank", -1, "only this task rank")
	fs.IntVar(&o.index, "index", -1, "the index of an array FluxJob")
	fs.StringVar(&o.message, "message", "", "the reason of a cancel")
	o.target.bindFlags(fs)
	fs.StringVar(&o.loading.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(o.overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return nil, errUsage
		}
		return nil, fmt.Errorf("%w (kubectl fluxjob --help)", err)
	}
	pos := fs.Args()
	if len(pos) == 0 {
		fs.Usage()
		return nil, errUsage
	}
	o.command = pos[0]
	allowed, ok := commandFlags[o.command]
	if !ok {
		return nil, fmt.Errorf("unknown command %q (logs, events, indexes, describe, cancel, hold, release)", o.command)
	}
	if len(pos) != 2 {
		return nil, fmt.Errorf("%s takes one FluxJob name, got %d arguments", o.command, len(pos)-1)
	}
	o.name = pos[1]
	var wrong []string
	for _, f := range []string{"follow", "stdout", "stderr", "rank", "index", "message"} {
		if fs.Changed(f) && !contains(allowed, f) {
			wrong = append(wrong, "--"+f)
		}
	}
	if len(wrong) > 0 {
		return nil, fmt.Errorf("%s does not take %s", o.command, strings.Join(wrong, ", "))
	}
	if o.onlyStdout && o.onlyStderr {
		return nil, fmt.Errorf("--stdout and --stderr exclude each other (neither prints both)")
	}
	if fs.Changed("index") && o.index < 0 {
		return nil, fmt.Errorf("--index must be an array index (0 or more), got %d", o.index)
	}
	if fs.Changed("rank") && o.rank < 0 {
		return nil, fmt.Errorf("--rank must be a task rank (0 or more), got %d", o.rank)
	}
	for _, f := range brokerFlags {
		o.target.Explicit = o.target.Explicit || fs.Changed(f)
	}
	return o, o.target.check()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// kubeClient is the FluxJob client and what it was built from.
type kubeClient struct {
	client.Client
	cfg       *rest.Config
	namespace string
}

// kube builds the Kubernetes client from the kubeconfig and flags, as
// kubectl does.
func (o *options) kube() (*kubeClient, error) {
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(o.loading, o.overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	cfg.UserAgent = "kubectl-fluxjob"
	s, err := scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &kubeClient{Client: c, cfg: cfg, namespace: ns}, nil
}
