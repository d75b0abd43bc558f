package v1alpha1_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// takenNames are resource names (kinds, plurals, singulars, short names,
// lower-cased) that widely deployed APIs already use and that kubectl
// resolves without a group: Kubernetes' own short names, the Flux CD
// operators' (fluxcd.controlplane.io and the toolkit groups) and
// flux-operator's (flux-framework.org). A name in two CRDs makes
// `kubectl get NAME` pick one of them: FluxInstance (fluxcd.controlplane.io)
// was one such name.
var takenNames = map[string]string{
	"fluxinstance": "fluxcd.controlplane.io", "fluxinstances": "fluxcd.controlplane.io",
	"fluxreport": "fluxcd.controlplane.io", "fluxreports": "fluxcd.controlplane.io",
	"resourceset": "fluxcd.controlplane.io", "resourcesetinputprovider": "fluxcd.controlplane.io",
	"kustomization": "kustomize.toolkit.fluxcd.io", "ks": "kustomize.toolkit.fluxcd.io",
	"helmrelease": "helm.toolkit.fluxcd.io", "hr": "helm.toolkit.fluxcd.io",
	"gitrepository": "source.toolkit.fluxcd.io", "gitrepo": "source.toolkit.fluxcd.io",
	"ocirepository": "source.toolkit.fluxcd.io", "ocirepo": "source.toolkit.fluxcd.io",
	"helmrepository": "source.toolkit.fluxcd.io", "helmrepo": "source.toolkit.fluxcd.io",
	"helmchart": "source.toolkit.fluxcd.io", "hc": "source.toolkit.fluxcd.io",
	"bucket":      "source.toolkit.fluxcd.io",
	"minicluster": "flux-framework.org", "miniclusters": "flux-framework.org",
	"ep": "core/v1 endpoints", "endpoints": "core/v1", "po": "core/v1 pods", "svc": "core/v1 services",
	"ns": "core/v1 namespaces", "no": "core/v1 nodes", "cm": "core/v1 configmaps", "sa": "core/v1 serviceaccounts",
	"deploy": "apps/v1", "sts": "apps/v1", "ds": "apps/v1", "rs": "apps/v1", "cj": "batch/v1 cronjobs",
	"job": "batch/v1", "jobs": "batch/v1", "ing": "networking.k8s.io/v1", "netpol": "networking.k8s.io/v1",
	"pv": "core/v1", "pvc": "core/v1", "ev": "events", "crd": "apiextensions.k8s.io", "pc": "scheduling.k8s.io",
	"workload": "kueue.x-k8s.io", "localqueue": "kueue.x-k8s.io", "clusterqueue": "kueue.x-k8s.io",
	"jobset": "jobset.x-k8s.io",
}

// TestCRDNamesUnique: no name of ours — kind, plural, singular or short
// name, in any committed CRD — is one that a widely deployed API uses.
func TestCRDNamesUnique(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs found: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		n := crd.Spec.Names
		names := append([]string{n.Kind, n.Plural, n.Singular}, n.ShortNames...)
		for _, name := range names {
			if owner, ok := takenNames[strings.ToLower(name)]; ok {
				t.Errorf("%s: name %q is also used by %s", filepath.Base(f), name, owner)
			}
		}
	}
}
