package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// testNamespace holds the FluxJobs the validation tests create.
const testNamespace = "fluxjob-validation"

// envtestAssets returns the directory of kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else the
// repo's bin/k8s when hack/envtest.sh built it there. Without either the test is skipped, or
// fails under CI=true.
func envtestAssets(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	dir := filepath.Join(repoRoot(t), "bin", "k8s")
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			requireTool(t, "KUBEBUILDER_ASSETS is unset and bin/k8s has no "+b+
				": build the envtest binaries with `make envtest` (or run `make test`)")
		}
	}
	return dir
}

// startAPIServer starts a real kube-apiserver and etcd with the FluxJob CRD from config/crd/bases
// installed, and returns a client for it. Both stop when the test ends.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: envtestAssets(t),
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(t), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest (kube-apiserver, etcd, FluxJob CRD): %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatalf("add core/v1 to scheme: %v", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatalf("add FluxJob to scheme: %v", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace %s: %v", testNamespace, err)
	}
	return c
}

// manifest builds a FluxJob object from the YAML of its spec (and optional extra top-level YAML).
func manifest(t *testing.T, name, spec, extra string) *unstructured.Unstructured {
	t.Helper()
	doc := fmt.Sprintf("apiVersion: fluxjob.io/v1alpha1\nkind: FluxJob\nmetadata:\n  name: %s\n  namespace: %s\n", name, testNamespace)
	if spec != "" {
		doc += "spec:\n" + indent(spec, "  ")
	}
	doc += extra
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test manifest %q: %v\n%s", name, err, doc)
	}
	return u
}

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		if line != "" {
			b.WriteString(prefix)
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

const helloJobspec = `jobspec:
  version: 1
  resources:
  - type: slot
    count: 1
    label: task
    with:
    - type: core
      count: 1
  tasks:
  - command: ["echo", "hello"]
    slot: task
    count:
      per_slot: 1
  attributes:
    system:
      duration: 0
`

// createExpect creates obj with strict field validation (as kubectl apply does): it must be
// accepted when want is nil, else rejected with a message mentioning every want.
func createExpect(ctx context.Context, t *testing.T, c client.Client, obj client.Object, want []string) {
	t.Helper()
	err := c.Create(ctx, obj, client.FieldValidation(metav1.FieldValidationStrict))
	if want == nil {
		if err != nil {
			t.Fatalf("rejected: %v", err)
		}
		return
	}
	wantRejected(t, err, want...)
}

// wantRejected checks that err is an API rejection whose message has every substring of want.
func wantRejected(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a rejection mentioning %q", want)
	}
	if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) && !apierrors.IsRequestEntityTooLargeError(err) {
		t.Fatalf("want an Invalid/BadRequest/TooLarge API error, got %T: %v", err, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestValidation creates good and bad FluxJobs through a real API server (strict field
// validation, as kubectl apply uses) and checks that the CRD schema and CEL rules accept or
// reject each with a clear message; then it checks the update rules (immutable spec, mutable
// urgency) and the status schema the controller writes to.
func TestValidation(t *testing.T) {
	c := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("create", func(t *testing.T) {
		bigBlob := strings.Repeat("x", 3<<20+512<<10) // 3.5 MiB: beyond the API server's 3 MiB request limit
		cases := []struct {
			name  string
			spec  string
			extra string
			want  []string // substrings of the rejection; nil: accepted
		}{
			{name: "hello-command", spec: "command: [echo, hello]\n"},
			{name: "full-jobspec", spec: helloJobspec + "urgency: 8\n"},
			{name: "all-command-options", spec: `command: [hostname]
tasks: 4
nodes: 2
coresPerTask: 2
gpusPerTask: 0
exclusive: true
duration: 10m
workingDir: /tmp
env:
- {name: OMP_NUM_THREADS, value: "2"}
- {name: EMPTY}
attributes: {project: demo, nested: {a: [1, 2]}}
urgency: 0
waitable: true
debug: true
`},
			{name: "empty-argument-allowed", spec: "command: [printf, \"\"]\n"},
			// The schema cannot look inside a free-form jobspec: a wrong version reaches the
			// controller, which ends it Failed with reason InvalidJobspec (controllers tests).
			{name: "jobspec-version-2-reaches-controller", spec: strings.Replace(helloJobspec, "version: 1", "version: 2", 1)},
			{name: "max-urgency", spec: "command: [\"true\"]\nurgency: 31\n"},

			{name: "both", spec: "command: [echo]\n" + helloJobspec,
				want: []string{"exactly one of spec.jobspec and spec.command must be set"}},
			{name: "neither", spec: "urgency: 16\n",
				want: []string{"exactly one of spec.jobspec and spec.command must be set"}},
			{name: "no-spec", want: []string{"spec: Required value"}},
			{name: "urgency-too-high", spec: "command: [\"true\"]\nurgency: 32\n",
				want: []string{"spec.urgency", "less than or equal to 31"}},
			{name: "urgency-negative", spec: "command: [\"true\"]\nurgency: -1\n",
				want: []string{"spec.urgency", "greater than or equal to 0"}},
			{name: "zero-tasks", spec: "command: [\"true\"]\ntasks: 0\n",
				want: []string{"spec.tasks", "greater than or equal to 1"}},
			{name: "negative-tasks", spec: "command: [\"true\"]\ntasks: -3\n",
				want: []string{"spec.tasks", "greater than or equal to 1"}},
			{name: "zero-nodes", spec: "command: [\"true\"]\nnodes: 0\n",
				want: []string{"spec.nodes", "greater than or equal to 1"}},
			{name: "zero-cores", spec: "command: [\"true\"]\ncoresPerTask: 0\n",
				want: []string{"spec.coresPerTask", "greater than or equal to 1"}},
			{name: "negative-gpus", spec: "command: [\"true\"]\ngpusPerTask: -1\n",
				want: []string{"spec.gpusPerTask", "greater than or equal to 0"}},
			{name: "nodes-over-tasks", spec: "command: [\"true\"]\ntasks: 2\nnodes: 3\n",
				want: []string{"spec.nodes must not be greater than spec.tasks"}},
			{name: "exclusive-without-nodes", spec: "command: [\"true\"]\nexclusive: true\n",
				want: []string{"spec.exclusive can only be set with spec.nodes"}},
			{name: "empty-command", spec: "command: []\n",
				want: []string{"spec.command", "at least 1 items"}},
			{name: "empty-program", spec: "command: [\"\", x]\n",
				want: []string{"spec.command[0] (the program) must not be empty"}},
			{name: "command-not-strings", spec: "command: [{a: b}]\n",
				want: []string{"spec.command[0]"}},
			{name: "unknown-spec-field", spec: "command: [\"true\"]\ncpus: 4\n",
				want: []string{`unknown field "spec.cpus"`}},
			{name: "unknown-top-field", spec: "command: [\"true\"]\n", extra: "extra: 1\n",
				want: []string{`unknown field "extra"`}},
			{name: "negative-duration", spec: "command: [\"true\"]\nduration: -5s\n",
				want: []string{"spec.duration must not be negative"}},
			{name: "malformed-duration", spec: "command: [\"true\"]\nduration: ten minutes\n",
				want: []string{"spec.duration"}},
			{name: "relative-workdir", spec: "command: [\"true\"]\nworkingDir: work\n",
				want: []string{"spec.workingDir must be an absolute path"}},
			{name: "bad-env-name", spec: "command: [\"true\"]\nenv: [{name: \"A=B\", value: x}]\n",
				want: []string{"spec.env[0].name", "should match"}},
			{name: "duplicate-env", spec: "command: [\"true\"]\nenv: [{name: A}, {name: A}]\n",
				want: []string{"spec.env[1]", "Duplicate value"}},
			{name: "env-valuefrom", spec: "command: [\"true\"]\nenv: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n",
				want: []string{`unknown field "spec.env[0].valueFrom"`}},
			{name: "attributes-not-object", spec: "command: [\"true\"]\nattributes: [1]\n",
				want: []string{"spec.attributes", "object"}},
			{name: "jobspec-with-command-options", spec: helloJobspec + "tasks: 2\n",
				want: []string{"go with spec.command"}},
			{name: "jobspec-not-object", spec: "jobspec: \"version: 1\"\n",
				want: []string{"spec.jobspec", "object"}},
			{name: "jobspec-oversized", spec: helloJobspec + "    user: {blob: " + bigBlob + "}\n",
				want: []string{"too large"}},
			{name: "failure-policy", spec: "command: [\"true\"]\nbackoffLimit: 3\nfailurePolicy:\n  rules:\n" +
				"  - {action: FailJob, onExitCodes: {operator: In, values: [1, 2]}}\n" +
				"  - {action: Ignore, onExceptions: [{type: timeout}, {type: node-failure, maxSeverity: 2, noteContains: lost}]}\n" +
				"  - {action: FailIndex, onExceptions: [{}]}\n  - {action: Retry, onExitCodes: {operator: NotIn, values: [0]}}\n"},
			{name: "rule-with-both", spec: "command: [\"true\"]\nfailurePolicy:\n  rules:\n" +
				"  - {action: FailJob, onExitCodes: {operator: In, values: [1]}, onExceptions: [{type: exec}]}\n",
				want: []string{"exactly one of onExitCodes and onExceptions"}},
			{name: "rule-with-neither", spec: "command: [\"true\"]\nfailurePolicy:\n  rules:\n  - {action: FailJob}\n",
				want: []string{"exactly one of onExitCodes and onExceptions"}},
			{name: "rule-bad-action", spec: "command: [\"true\"]\nfailurePolicy:\n  rules:\n  - {action: Count, onExceptions: [{}]}\n",
				want: []string{"spec.failurePolicy.rules[0].action", "Unsupported value"}},
			{name: "exit-code-out-of-range", spec: "command: [\"true\"]\nfailurePolicy:\n  rules:\n  - {action: FailJob, onExitCodes: {operator: In, values: [256]}}\n",
				want: []string{"spec.failurePolicy.rules[0].onExitCodes.values[0]", "less than or equal to 255"}},
			{name: "severity-out-of-range", spec: "command: [\"true\"]\nfailurePolicy:\n  rules:\n  - {action: FailJob, onExceptions: [{maxSeverity: 8}]}\n",
				want: []string{"maxSeverity", "less than or equal to 7"}},
			{name: "waitable-with-retries", spec: "command: [\"true\"]\nwaitable: true\nbackoffLimit: 1\n",
				want: []string{"spec.waitable cannot be combined with spec.backoffLimit"}},
			{name: "negative-backoff-limit", spec: "command: [\"true\"]\nbackoffLimit: -1\n",
				want: []string{"spec.backoffLimit", "greater than or equal to 0"}},
			{name: "array-per-index-retries", spec: "command: [\"true\"]\narray: {indexes: \"0-9\", backoffLimitPerIndex: 2, maxFailedIndexes: 3}\n" +
				"failurePolicy:\n  rules:\n  - {action: FailIndex, onExitCodes: {operator: In, values: [3]}}\n"},
			{name: "array-max-failed-without-per-index", spec: "command: [\"true\"]\narray: {indexes: \"0-9\", maxFailedIndexes: 3}\n",
				want: []string{"spec.array.maxFailedIndexes needs spec.array.backoffLimitPerIndex"}},
			{name: "array-with-backoff-limit", spec: "command: [\"true\"]\nbackoffLimit: 2\narray: {indexes: \"0-9\"}\n",
				want: []string{"spec.backoffLimit is not used with spec.array"}},
			{name: "array-per-index-too-high", spec: "command: [\"true\"]\narray: {indexes: \"0-9\", backoffLimitPerIndex: 101}\n",
				want: []string{"spec.array.backoffLimitPerIndex", "less than or equal to 100"}},
			{name: "array-max-failed-negative", spec: "command: [\"true\"]\narray: {indexes: \"0-9\", backoffLimitPerIndex: 1, maxFailedIndexes: -1}\n",
				want: []string{"spec.array.maxFailedIndexes", "greater than or equal to 0"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				createExpect(ctx, t, c, manifest(t, tc.name, tc.spec, tc.extra), tc.want)
			})
		}
	})

	t.Run("defaults", func(t *testing.T) {
		got := &v1alpha1.FluxJob{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: testNamespace, Name: "hello-command"}, got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Urgency == nil || *got.Spec.Urgency != v1alpha1.DefaultUrgency {
			t.Errorf("spec.urgency = %v, want the default %d", got.Spec.Urgency, v1alpha1.DefaultUrgency)
		}
		if got.Spec.Tasks != nil || got.Spec.CoresPerTask != nil {
			t.Errorf("command options got schema defaults (tasks %v, coresPerTask %v); they must stay unset",
				got.Spec.Tasks, got.Spec.CoresPerTask)
		}
	})

	t.Run("update", func(t *testing.T) { testUpdates(ctx, t, c) })
	t.Run("status", func(t *testing.T) { testStatus(ctx, t, c) })
	t.Run("fluxendpoint", func(t *testing.T) { testFluxEndpoints(ctx, t, c) })
}

// createTyped creates a FluxJob from spec YAML and returns it as read back.
func createTyped(ctx context.Context, t *testing.T, c client.Client, name, spec string) *v1alpha1.FluxJob {
	t.Helper()
	if err := c.Create(ctx, manifest(t, name, spec, ""), client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	got := &v1alpha1.FluxJob{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: testNamespace, Name: name}, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func testUpdates(ctx context.Context, t *testing.T, c client.Client) {
	cases := []struct {
		name   string
		spec   string
		mutate func(*v1alpha1.FluxJob)
		want   []string // nil: accepted
		check  func(*testing.T, *v1alpha1.FluxJob)
	}{
		{name: "urgency-raise", spec: "command: [sleep, \"60\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Urgency = ptr.To[int32](31) },
			check: func(t *testing.T, j *v1alpha1.FluxJob) {
				if *j.Spec.Urgency != 31 {
					t.Errorf("urgency = %d, want 31", *j.Spec.Urgency)
				}
			}},
		{name: "urgency-hold", spec: helloJobspec,
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Urgency = ptr.To[int32](0) }},
		{name: "urgency-removed-defaults-again", spec: "command: [\"true\"]\nurgency: 3\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Urgency = nil },
			check: func(t *testing.T, j *v1alpha1.FluxJob) {
				if j.Spec.Urgency == nil || *j.Spec.Urgency != 16 {
					t.Errorf("urgency = %v, want the default 16", j.Spec.Urgency)
				}
			}},
		{name: "urgency-out-of-range", spec: "command: [\"true\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Urgency = ptr.To[int32](40) },
			want:   []string{"spec.urgency", "less than or equal to 31"}},
		{name: "finalizer-and-labels", spec: "command: [\"true\"]\ntasks: 2\n",
			mutate: func(j *v1alpha1.FluxJob) {
				j.Finalizers = append(j.Finalizers, v1alpha1.CancelFinalizer)
				j.Labels = map[string]string{"team": "a"}
			},
			check: func(t *testing.T, j *v1alpha1.FluxJob) {
				if len(j.Finalizers) != 1 {
					t.Errorf("finalizers = %v", j.Finalizers)
				}
				// Let the namespace cleanup go through.
				j.Finalizers = nil
			}},
		{name: "command-changed", spec: "command: [echo, a]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Command = []string{"echo", "b"} },
			want:   []string{"spec.command is immutable"}},
		{name: "tasks-changed", spec: "command: [\"true\"]\ntasks: 2\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Tasks = ptr.To[int32](3) },
			want:   []string{"spec.tasks is immutable"}},
		{name: "tasks-added", spec: "command: [\"true\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Tasks = ptr.To[int32](3) },
			want:   []string{"spec is immutable except spec.urgency"}},
		{name: "env-removed", spec: "command: [\"true\"]\nenv: [{name: A, value: b}]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Env = nil },
			want:   []string{"spec is immutable except spec.urgency"}},
		{name: "duration-changed", spec: "command: [\"true\"]\nduration: 1m\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Duration = &metav1.Duration{Duration: time.Hour} },
			want:   []string{"spec.duration is immutable"}},
		{name: "jobspec-changed", spec: helloJobspec,
			mutate: func(j *v1alpha1.FluxJob) {
				j.Spec.Jobspec = &runtime.RawExtension{Raw: []byte(strings.Replace(string(j.Spec.Jobspec.Raw), "hello", "bye", 1))}
			},
			want: []string{"spec.jobspec is immutable"}},
		{name: "jobspec-to-command", spec: helloJobspec,
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Jobspec = nil; j.Spec.Command = []string{"true"} },
			want:   []string{"spec is immutable except spec.urgency"}},
		{name: "waitable-set", spec: "command: [\"true\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Waitable = true },
			want:   []string{"spec is immutable except spec.urgency"}},
		{name: "instance-changed", spec: "command: [\"true\"]\ninstance: cluster-a\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Instance = "cluster-b" },
			want:   []string{"spec.instance is immutable"}},
		{name: "instance-added", spec: "command: [\"true\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Instance = "cluster-b" },
			want:   []string{"spec.instance is immutable"}},
		{name: "instance-removed", spec: "command: [\"true\"]\ninstance: cluster-a\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.Instance = "" },
			want:   []string{"spec.instance is immutable"}},
		{name: "backoff-limit-changed", spec: "command: [\"true\"]\nbackoffLimit: 1\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.BackoffLimit = ptr.To[int32](5) },
			want:   []string{"spec.backoffLimit is immutable"}},
		{name: "backoff-limit-added", spec: "command: [\"true\"]\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.BackoffLimit = ptr.To[int32](5) },
			want:   []string{"spec.backoffLimit and spec.failurePolicy are immutable"}},
		{name: "failure-policy-changed", spec: "command: [\"true\"]\nfailurePolicy: {rules: [{action: FailJob, onExceptions: [{}]}]}\n",
			mutate: func(j *v1alpha1.FluxJob) { j.Spec.FailurePolicy.Rules[0].Action = v1alpha1.ActionIgnore },
			want:   []string{"spec.failurePolicy is immutable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "upd-" + tc.name
			obj := createTyped(ctx, t, c, name, tc.spec)
			tc.mutate(obj)
			err := c.Update(ctx, obj)
			if tc.want != nil {
				wantRejected(t, err, tc.want...)
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			got := &v1alpha1.FluxJob{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, got)
				if err := c.Update(ctx, got); err != nil {
					t.Fatalf("cleanup update: %v", err)
				}
			}
		})
	}
}

// testStatus checks the status schema the controller writes through the status subresource.
func testStatus(ctx context.Context, t *testing.T, c client.Client) {
	obj := createTyped(ctx, t, c, "status", "command: [\"true\"]\n")
	now := metav1.Now()
	good := v1alpha1.FluxJobStatus{
		JobID:      1234567890123,
		JobIDF58:   "ƒ2Q6Jf8Y3",
		Phase:      v1alpha1.PhaseSucceeded,
		ExitStatus: ptr.To[int32](0),
		Events: []v1alpha1.FluxJobEvent{
			{Name: "submit", Time: metav1.NewMicroTime(now.Time), Context: `{"userid":1000,"urgency":16,"flags":0,"version":1}`},
			{Name: "finish", Time: metav1.NewMicroTime(now.Time), Context: `{"status":0}`},
		},
		SubmitTime:     &now,
		StartTime:      &now,
		CompletionTime: &now,
		Duration:       &metav1.Duration{Duration: 3 * time.Second},
		Urgency:        ptr.To[int32](16),
		Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonCompleted,
			Message: "exit 0", LastTransitionTime: now, ObservedGeneration: obj.Generation,
		}},
		ObservedGeneration: obj.Generation,
		Message:            "job ƒ2Q6Jf8Y3 exited 0",
	}
	obj.Status = good
	if err := c.Status().Update(ctx, obj); err != nil {
		t.Fatalf("valid status rejected: %v", err)
	}
	got := &v1alpha1.FluxJob{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.JobIDF58 != good.JobIDF58 || got.Status.Phase != good.Phase || len(got.Status.Events) != 2 {
		t.Errorf("status not stored: %+v", got.Status)
	}

	bad := []struct {
		name   string
		mutate func(*v1alpha1.FluxJobStatus)
		want   string
	}{
		{"unknown-phase", func(s *v1alpha1.FluxJobStatus) { s.Phase = "Done" }, "status.phase"},
		{"too-many-events", func(s *v1alpha1.FluxJobStatus) {
			s.Events = make([]v1alpha1.FluxJobEvent, v1alpha1.MaxStatusEvents+1)
			for i := range s.Events {
				s.Events[i] = v1alpha1.FluxJobEvent{Name: "x", Time: metav1.NewMicroTime(now.Time)}
			}
		}, "status.events"},
		{"long-context", func(s *v1alpha1.FluxJobStatus) {
			s.Events[0].Context = strings.Repeat("c", v1alpha1.MaxEventContextLength+1)
		}, "status.events[0].context"},
		{"severity", func(s *v1alpha1.FluxJobStatus) {
			s.Exception = &v1alpha1.FluxJobException{Type: "cancel", Severity: 8}
		}, "status.exception.severity"},
		{"long-message", func(s *v1alpha1.FluxJobStatus) {
			s.Message = strings.Repeat("m", v1alpha1.MaxMessageLength+1)
		}, "status.message"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			cur := &v1alpha1.FluxJob{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
				t.Fatal(err)
			}
			cur.Status = *good.DeepCopy()
			tc.mutate(&cur.Status)
			wantRejected(t, c.Status().Update(ctx, cur), tc.want)
		})
	}

	t.Run("spec-through-status-ignored", func(t *testing.T) {
		cur := &v1alpha1.FluxJob{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Command = []string{"rm", "-rf", "/"}
		if err := c.Status().Update(ctx, cur); err != nil {
			t.Fatalf("status update: %v", err)
		}
		after := &v1alpha1.FluxJob{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), after); err != nil {
			t.Fatal(err)
		}
		if strings.Join(after.Spec.Command, " ") != "true" {
			t.Errorf("spec changed through the status subresource: %v", after.Spec.Command)
		}
	})
}
