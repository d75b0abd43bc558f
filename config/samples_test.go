package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	fluxjobv1alpha1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
)

// sampleFiles returns the sample manifests listed in
// config/samples/kustomization.yaml, and fails if a sample file in the
// directory is not listed (it would never be applied by the e2e tests).
func sampleFiles(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("samples", "kustomization.yaml"))
	if err != nil {
		t.Fatalf("read samples kustomization: %v", err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("parse samples kustomization: %v", err)
	}
	entries, err := os.ReadDir("samples")
	if err != nil {
		t.Fatalf("list samples: %v", err)
	}
	for _, e := range entries {
		if e.Name() != "kustomization.yaml" && strings.HasSuffix(e.Name(), ".yaml") && !slices.Contains(k.Resources, e.Name()) {
			t.Errorf("samples/%s is not listed in samples/kustomization.yaml", e.Name())
		}
	}
	if len(k.Resources) < 5 {
		t.Fatalf("samples/kustomization.yaml lists %d samples, want at least 5", len(k.Resources))
	}
	return k.Resources
}

// TestSamplesMatchAPI decodes every sample strictly into the FluxJob Go type
// (an unknown or misspelt field fails), checks the rules the CRD enforces
// with CEL that a Go decode cannot see, and builds or validates the jobspec
// the controller would submit with fluxbridge/job, as the broker's validator
// would.
func TestSamplesMatchAPI(t *testing.T) {
	names := map[string]string{}
	var deps []fluxjobv1alpha1.FluxJob
	t.Cleanup(func() {
		// spec.dependsOn names FluxJobs of the same namespace: samples.
		for _, fj := range deps {
			for _, d := range fj.Spec.DependsOn {
				if _, ok := names[d.Name]; !ok || d.Name == fj.Name {
					t.Errorf("%s: spec.dependsOn names %q, which is not another sample", fj.Name, d.Name)
				}
			}
		}
	})
	for _, file := range sampleFiles(t) {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("samples", file))
			if err != nil {
				t.Fatal(err)
			}
			var fj fluxjobv1alpha1.FluxJob
			if err := yaml.UnmarshalStrict(b, &fj); err != nil {
				t.Fatalf("does not match the FluxJob API: %v", err)
			}
			if fj.APIVersion != fluxjobv1alpha1.GroupVersion.String() || fj.Kind != "FluxJob" {
				t.Errorf("apiVersion/kind = %s/%s, want %s/FluxJob", fj.APIVersion, fj.Kind, fluxjobv1alpha1.GroupVersion)
			}
			if fj.Name == "" {
				t.Fatal("no metadata.name")
			}
			if other, dup := names[fj.Name]; dup {
				t.Errorf("name %q is also used by %s", fj.Name, other)
			}
			names[fj.Name] = file
			if fj.Namespace != "" {
				t.Errorf("namespace %q set: samples apply to the namespace the user chooses", fj.Namespace)
			}
			if fj.Status.Phase != "" || len(fj.Status.Conditions) > 0 {
				t.Error("a sample must not carry status")
			}
			s := fj.Spec
			if len(s.DependsOn) > 0 {
				deps = append(deps, fj)
			}
			if s.Queue != "" && s.Jobspec != nil {
				t.Error("spec.queue goes with spec.command only")
			}
			if (s.Jobspec != nil) == (len(s.Command) > 0) {
				t.Fatal("exactly one of spec.jobspec and spec.command must be set")
			}
			if s.Urgency != nil && (*s.Urgency < fluxjobv1alpha1.MinUrgency || *s.Urgency > fluxjobv1alpha1.MaxUrgency) {
				t.Errorf("urgency %d out of range", *s.Urgency)
			}
			if s.Jobspec != nil {
				if len(s.Jobspec.Raw) > fluxjobv1alpha1.MaxJobspecBytes {
					t.Errorf("jobspec is %d bytes, over %d", len(s.Jobspec.Raw), fluxjobv1alpha1.MaxJobspecBytes)
				}
				if _, err := job.Parse(s.Jobspec.Raw); err != nil {
					t.Errorf("the broker would reject the jobspec: %v", err)
				}
				return
			}
			if _, err := job.FromCommand(s.Command, commandOptions(t, s)); err != nil {
				t.Errorf("cannot build a jobspec from the command: %v", err)
			}
		})
	}
}

// commandOptions maps the spec's command options to fluxbridge/job's, as the
// controller does, checking the CEL rules on the way.
func commandOptions(t *testing.T, s fluxjobv1alpha1.FluxJobSpec) job.CommandOptions {
	t.Helper()
	opts := job.CommandOptions{Exclusive: s.Exclusive, Cwd: s.WorkingDir}
	tasks := int32(1)
	if s.Tasks != nil {
		tasks = *s.Tasks
		opts.NumTasks = int(tasks)
	}
	if s.Nodes != nil {
		if *s.Nodes > tasks {
			t.Errorf("nodes %d > tasks %d", *s.Nodes, tasks)
		}
		opts.NumNodes = int(*s.Nodes)
	} else if s.Exclusive {
		t.Error("exclusive without nodes")
	}
	if s.CoresPerTask != nil {
		opts.CoresPerTask = int(*s.CoresPerTask)
	}
	if s.GPUsPerTask != nil {
		opts.GPUsPerTask = int(*s.GPUsPerTask)
	}
	if s.Duration != nil {
		if s.Duration.Duration < 0 {
			t.Error("negative duration")
		}
		opts.Duration = s.Duration.Duration
	}
	if s.WorkingDir != "" && !strings.HasPrefix(s.WorkingDir, "/") {
		t.Errorf("workingDir %q is not absolute", s.WorkingDir)
	}
	if len(s.Env) > 0 {
		opts.Environment = map[string]string{}
		for _, e := range s.Env {
			if _, dup := opts.Environment[e.Name]; dup {
				t.Errorf("env %s given twice", e.Name)
			}
			opts.Environment[e.Name] = e.Value
		}
	}
	if s.Attributes != nil {
		var attrs map[string]any
		if err := yaml.Unmarshal(s.Attributes.Raw, &attrs); err != nil {
			t.Fatalf("spec.attributes is not an object: %v", err)
		}
		if _, reserved := attrs[fluxjobv1alpha1.UserAttributeKey]; reserved {
			t.Errorf("spec.attributes uses the reserved key %q", fluxjobv1alpha1.UserAttributeKey)
		}
		opts.UserAttributes = attrs
	}
	return opts
}

// TestSamplesCoverTheIssue checks that the samples issue 6 asks for exist:
// hello world, a failing job, a multi-task job, a full jobspec, and a job
// with a user attribute and environment.
func TestSamplesCoverTheIssue(t *testing.T) {
	var jobs []fluxjobv1alpha1.FluxJob
	for _, file := range sampleFiles(t) {
		b, err := os.ReadFile(filepath.Join("samples", file))
		if err != nil {
			t.Fatal(err)
		}
		var fj fluxjobv1alpha1.FluxJob
		if err := yaml.Unmarshal(b, &fj); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		jobs = append(jobs, fj)
	}
	has := func(what string, pred func(s fluxjobv1alpha1.FluxJobSpec) bool) {
		t.Helper()
		if !slices.ContainsFunc(jobs, func(j fluxjobv1alpha1.FluxJob) bool { return pred(j.Spec) }) {
			t.Errorf("no sample for %s", what)
		}
	}
	has("hello world", func(s fluxjobv1alpha1.FluxJobSpec) bool {
		return slices.Equal(s.Command, []string{"echo", "hello", "world"}) || slices.Equal(s.Command, []string{"hostname"})
	})
	has("a failing job", func(s fluxjobv1alpha1.FluxJobSpec) bool { return slices.Equal(s.Command, []string{"false"}) })
	has("a multi-task job", func(s fluxjobv1alpha1.FluxJobSpec) bool { return s.Tasks != nil && *s.Tasks > 1 })
	has("a full jobspec", func(s fluxjobv1alpha1.FluxJobSpec) bool { return s.Jobspec != nil })
	has("environment and user attributes", func(s fluxjobv1alpha1.FluxJobSpec) bool {
		return len(s.Env) > 0 && s.Attributes != nil
	})
	// Issue 14: a two-step dependsOn pipeline and a queue.
	has("a dependsOn pipeline step", func(s fluxjobv1alpha1.FluxJobSpec) bool { return len(s.DependsOn) > 0 })
	has("a queue", func(s fluxjobv1alpha1.FluxJobSpec) bool { return s.Queue != "" })
}
