// Command manager runs the fluxjob-operator: a controller-runtime manager
// whose FluxJob controller submits FluxJobs to a Flux broker through one
// shared executor and keeps their status true.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/controllers"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
	"github.com/fluxjob/fluxjob-operator/internal/recorder"
)

// defaultFluxURI is the broker socket of the Flux sidecar in config/manager
// (the shared emptyDir), used when neither --flux-uri nor FLUX_URI is set.
const defaultFluxURI = "local:///run/flux/broker/local"

// maxLogVerbosity is the highest --zap-log-level honoured (see parseFlags).
const maxLogVerbosity = 7

// leaderElectionID names the Lease the replicas compete for.
const leaderElectionID = "fluxjob-operator.fluxjob.io"

// The secure metrics endpoint asks the API server who a caller is and
// whether it may get /metrics (metrics/filters.WithAuthenticationAndAuthorization).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions is the metrics server of the manager: with --metrics-secure
// (the default) HTTPS, and only for callers the API server authenticates and
// authorizes, as kubebuilder scaffolds it. In the sidecar layout every Flux
// job shares the pod's network namespace, so "only reachable from inside the
// pod" protects nothing.
func metricsOptions(c *config) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: c.metricsAddr, SecureServing: c.metricsSecure}
	if c.metricsSecure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
		opts.CertDir = c.metricsCertDir
	}
	return opts
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// config holds the parsed flags.
type config struct {
	fluxURI                 string
	defaultInstance         string
	managerNamespace        string
	workers                 int
	metricsAddr             string
	metricsSecure           bool
	metricsCertDir          string
	probeAddr               string
	pprofAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	watchNamespaces         string
	allowedNamespaces       string
	privilegedNamespaces    string
	execNamespaces          string
	allowExecCommand        bool
	maxConcurrentReconciles int
	fluxInactiveAgeLimit    time.Duration
	kubeconfig              string
	zap                     zap.Options
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	uri := os.Getenv("FLUX_URI")
	if uri == "" {
		uri = defaultFluxURI
	}
	fs.StringVar(&c.fluxURI, "flux-uri", uri, "URI of the Flux broker (local://PATH). Default: $FLUX_URI, else the sidecar socket "+defaultFluxURI+".")
	fs.StringVar(&c.defaultInstance, "default-instance", "default", "Name of the implicit Flux instance at --flux-uri: FluxJobs without spec.instance run there unless a FluxEndpoint is annotated "+fluxjobv1.DefaultInstanceAnnotation+"=true. Empty: no implicit instance (only FluxEndpoint objects).")
	fs.StringVar(&c.managerNamespace, "manager-namespace", os.Getenv("POD_NAMESPACE"), "The manager's namespace, the only one the ssh Secrets of FluxEndpoints are read from. Default: $POD_NAMESPACE, else (in a cluster) the pod's own namespace.")
	fs.IntVar(&c.workers, "executor-workers", 2, "Number of executor workers of the implicit instance, each with its own broker connection.")
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint; \"0\" turns it off.")
	fs.BoolVar(&c.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS to callers the API server authenticates (TokenReview) and authorizes for GET /metrics (SubjectAccessReview). false: plain HTTP to anyone who can connect, including every Flux job in the sidecar layout.")
	fs.StringVar(&c.metricsCertDir, "metrics-cert-dir", "", "Directory with tls.crt and tls.key for the metrics endpoint; empty: a self-signed certificate generated at start.")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address of the health (/healthz) and readiness (/readyz: broker connected) probes.")
	fs.StringVar(&c.pprofAddr, "pprof-bind-address", "0", "Address of the Go profiling endpoints (/debug/pprof/); \"0\" (the default) turns them off. They expose heap contents: bind them to localhost only.")
	fs.BoolVar(&c.leaderElect, "leader-elect", false, "Use leader election (Lease "+leaderElectionID+") so that only one replica reconciles.")
	fs.StringVar(&c.leaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election Lease. Default: $POD_NAMESPACE, else (in a cluster) the pod's own namespace; required outside a cluster.")
	fs.StringVar(&c.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch (and cache); empty: all namespaces.")
	fs.StringVar(&c.allowedNamespaces, "allowed-namespaces", "", "Comma-separated namespaces whose FluxJobs may run on this Flux instance; others end Failed (NamespaceNotAllowed). Empty: all.")
	fs.StringVar(&c.privilegedNamespaces, "privileged-namespaces", "", "Comma-separated namespaces whose FluxJobs may use the Flux instance owner's powers: spec.urgency above 16 and spec.waitable. Others end Failed (PrivilegeNotAllowed) and are never submitted. Empty: none.")
	fs.StringVar(&c.execNamespaces, "exec-namespaces", "", "Comma-separated namespaces FluxEndpoint miniCluster and pod connections may name (the manager reads pods and execs `flux relay` there; config/components/pod-exec grants it that in the same list). Others are refused (ExecNamespaceNotAllowed). Empty (the default): none.")
	fs.BoolVar(&c.allowExecCommand, "allow-exec-command", false, "Run the command a FluxEndpoint's miniCluster or pod connection sets instead of the relay (as the container's user, in any pod of --exec-namespaces). Off: such FluxEndpoints are refused (ExecCommandNotAllowed).")
	fs.IntVar(&c.maxConcurrentReconciles, "max-concurrent-reconciles", 4, "Maximum number of FluxJobs reconciled at once.")
	fs.DurationVar(&c.fluxInactiveAgeLimit, "flux-inactive-age-limit", 0, "The Flux instance's [job-manager] inactive-age-limit (how long it keeps finished jobs); 0: none. A submission attempt older than this whose job is not found is not submitted again (SubmissionUnknown).")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty: $KUBECONFIG, else the in-cluster config, else ~/.kube/config.")
	c.zap = zap.Options{Development: false}
	c.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	// From V(8) on, client-go logs request and response bodies, which carry
	// FluxJob specs and so environment values: never go that far.
	if c.zap.Level != nil && c.zap.Level.Enabled(zapcore.Level(-(maxLogVerbosity + 1))) {
		c.zap.Level = zapcore.Level(-maxLogVerbosity)
	}
	if c.workers < 1 {
		return nil, fmt.Errorf("--executor-workers must be at least 1, got %d", c.workers)
	}
	if c.maxConcurrentReconciles < 1 {
		return nil, fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", c.maxConcurrentReconciles)
	}
	return c, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(args []string) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&c.zap)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fluxjobv1.AddToScheme(scheme))

	// Nothing reads managedFields: dropping them from the cache saves about
	// a tenth of the heap at 10,000 FluxJobs (docs/benchmarks.md). Cached
	// FluxJobs are compacted further (controllers.CompactFluxJob: shared
	// strings, no events of finished jobs), a fifth to a half of each.
	cacheOpts := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&fluxjobv1.FluxJob{}: {Transform: controllers.CacheTransformFor(controllers.CacheOptions{
				AllowedNamespaces: splitList(c.allowedNamespaces),
			})},
		},
	}
	if ns := splitList(c.watchNamespaces); len(ns) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, n := range ns {
			cacheOpts.DefaultNamespaces[n] = cache.Config{}
		}
	}
	var restCfg *rest.Config
	if c.kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	} else {
		restCfg, err = ctrl.GetConfig()
	}
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsOptions(c),
		HealthProbeBindAddress:        c.probeAddr,
		PprofBindAddress:              c.pprofAddr,
		LeaderElection:                c.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       c.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	// One executor and control connection per Flux instance: the
	// FluxEndpoint objects' (started and stopped by the FluxEndpoint
	// reconciler through the registry) and the implicit instance at
	// --flux-uri (the sidecar), which keeps the single-instance deployment
	// working unchanged. Connectors stop with the manager, shutting their
	// executors down (in-flight submissions get a bounded wait; jobs keep
	// running in Flux).
	instances := broker.NewRegistry(broker.ConnectorOptions{Logger: ctrl.Log.WithName("executor")})
	if err := mgr.Add(instances); err != nil {
		return fmt.Errorf("adding the instance registry: %w", err)
	}
	if c.defaultInstance != "" {
		fluxConn := broker.NewConnector(broker.ConnectorOptions{
			URI: c.fluxURI, Workers: c.workers, Logger: ctrl.Log.WithName("executor"), Instance: c.defaultInstance,
		})
		if err := mgr.Add(fluxConn); err != nil {
			return fmt.Errorf("adding the Flux connector: %w", err)
		}
		instances.SetImplicit(c.defaultInstance, fluxConn)
	}
	// Events are written by our own recorder rather than the manager's
	// (client-go's broadcaster keeps a copy of every event for minutes).
	hostname, _ := os.Hostname()
	events := recorder.New(mgr.GetClient(), mgr.GetScheme(), recorder.Options{
		Controller: "fluxjob-controller", Instance: "fluxjob-controller-" + hostname, Logger: ctrl.Log.WithName("events"),
	})
	recorder.RegisterMetrics()
	if err := mgr.Add(events); err != nil {
		return fmt.Errorf("adding the event recorder: %w", err)
	}
	r := &controllers.FluxJobReconciler{
		Client:    mgr.GetClient(),
		Scheme:    mgr.GetScheme(),
		Recorder:  events,
		Instances: instances,
		Options: controllers.Options{
			AllowedNamespaces:       splitList(c.allowedNamespaces),
			PrivilegedNamespaces:    splitList(c.privilegedNamespaces),
			MaxConcurrentReconciles: c.maxConcurrentReconciles,
			PurgeAge:                c.fluxInactiveAgeLimit,
		},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the FluxJob controller: %w", err)
	}
	ir := &controllers.FluxEndpointReconciler{
		Client:     mgr.GetClient(),
		Registry:   instances,
		Recorder:   events,
		Namespace:  managerNamespace(c.managerNamespace),
		Transports: broker.DefaultTransports(restCfg),

		ExecNamespaces:   splitList(c.execNamespaces),
		AllowExecCommand: c.allowExecCommand,
	}
	if err := ir.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the FluxEndpoint controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("flux", instances.Ready); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	log.Info("starting the manager", "fluxURI", c.fluxURI, "defaultInstance", c.defaultInstance, "workers", c.workers,
		"watchNamespaces", c.watchNamespaces, "allowedNamespaces", c.allowedNamespaces,
		"privilegedNamespaces", c.privilegedNamespaces, "execNamespaces", c.execNamespaces, "allowExecCommand", c.allowExecCommand, "metricsSecure", c.metricsSecure, "leaderElection", c.leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// managerNamespace returns flag if set, else the pod's own namespace ("" outside a cluster).
func managerNamespace(flag string) string {
	if flag != "" {
		return flag
	}
	b, err := os.ReadFile(serviceAccountNamespace)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
