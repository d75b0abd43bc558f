package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	fluxjobv1alpha1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// TestInstanceSamples decodes every document of config/samples/instances strictly into its Go
// type (FluxEndpoint, FluxJob or Secret) and checks what the CRD's CEL rules and the controller
// would: exactly one connection, an ssh:// URI with a Secret of the manager's namespace holding
// both keys, FluxJobs naming a sample instance, every FluxEndpoint admitting some namespaces.
func TestInstanceSamples(t *testing.T) {
	dir := filepath.Join("samples", "instances")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	instances := map[string]*fluxjobv1alpha1.FluxEndpoint{}
	secrets := map[string]*corev1.Secret{}
	var jobs []*fluxjobv1alpha1.FluxJob
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", e.Name(), err)
			}
			switch meta.Kind {
			case "FluxEndpoint":
				fi := &fluxjobv1alpha1.FluxEndpoint{}
				if err := yaml.UnmarshalStrict([]byte(doc), fi); err != nil {
					t.Fatalf("%s: does not match the FluxEndpoint API: %v", e.Name(), err)
				}
				instances[fi.Name] = fi
			case "FluxJob":
				fj := &fluxjobv1alpha1.FluxJob{}
				if err := yaml.UnmarshalStrict([]byte(doc), fj); err != nil {
					t.Fatalf("%s: does not match the FluxJob API: %v", e.Name(), err)
				}
				if fj.Namespace != "" {
					t.Errorf("%s: FluxJob %s sets a namespace", e.Name(), fj.Name)
				}
				jobs = append(jobs, fj)
			case "Secret":
				s := &corev1.Secret{}
				if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
					t.Fatalf("%s: %v", e.Name(), err)
				}
				secrets[s.Name] = s
			default:
				t.Errorf("%s: unexpected kind %q", e.Name(), meta.Kind)
			}
		}
	}
	var kinds []string
	for name, fi := range instances {
		c := fi.Spec.Connection
		n := 0
		for _, set := range []bool{c.URI != "", c.MiniCluster != nil, c.Pod != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Errorf("FluxEndpoint %s: %d connections, want exactly one", name, n)
		}
		if fi.Spec.NamespaceSelector == nil {
			t.Errorf("FluxEndpoint %s has no namespaceSelector: it would admit no namespace", name)
		}
		switch {
		case strings.HasPrefix(c.URI, "ssh://"):
			kinds = append(kinds, "ssh")
			if c.SecretRef == nil {
				t.Fatalf("FluxEndpoint %s: ssh:// without secretRef", name)
			}
			s := secrets[c.SecretRef.Name]
			if s == nil {
				t.Fatalf("FluxEndpoint %s: Secret %s is not in the samples", name, c.SecretRef.Name)
			}
			if s.Namespace != "fluxjob-system" {
				t.Errorf("Secret %s in namespace %q: the manager reads Secrets only in its own, fluxjob-system", s.Name, s.Namespace)
			}
			for _, k := range []string{fluxjobv1alpha1.SSHPrivateKeyKey, fluxjobv1alpha1.SSHKnownHostsKey} {
				if s.StringData[k] == "" && len(s.Data[k]) == 0 {
					t.Errorf("Secret %s lacks %s", s.Name, k)
				}
			}
		case c.MiniCluster != nil:
			kinds = append(kinds, "miniCluster")
		}
	}
	for _, want := range []string{"ssh", "miniCluster"} {
		if !strings.Contains(strings.Join(kinds, ","), want) {
			t.Errorf("no %s FluxEndpoint sample", want)
		}
	}
	for _, fj := range jobs {
		if instances[fj.Spec.Instance] == nil {
			t.Errorf("FluxJob %s names instance %q, which is not a sample", fj.Name, fj.Spec.Instance)
		}
	}
}
