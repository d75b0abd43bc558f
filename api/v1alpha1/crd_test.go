package v1alpha1_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// loadCRD reads the committed FluxJob CRD.
func loadCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "crd", "bases", "fluxjob.io_fluxjobs.yaml"))
	if err != nil {
		t.Fatalf("read CRD: %v", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(b, crd); err != nil {
		t.Fatalf("parse CRD: %v", err)
	}
	return crd
}

// TestCRDShape checks what kubectl users see of the CRD: names, short name, category, the
// status subresource and the printer columns.
func TestCRDShape(t *testing.T) {
	crd := loadCRD(t)
	if crd.Spec.Group != v1alpha1.GroupVersion.Group || crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("group %q scope %q", crd.Spec.Group, crd.Spec.Scope)
	}
	n := crd.Spec.Names
	if n.Kind != "FluxJob" || n.Plural != "fluxjobs" || !slices.Equal(n.ShortNames, []string{"fj"}) ||
		!slices.Equal(n.Categories, []string{"flux"}) {
		t.Errorf("names = %+v", n)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%d versions", len(crd.Spec.Versions))
	}
	v := crd.Spec.Versions[0]
	if v.Name != v1alpha1.GroupVersion.Version || !v.Served || !v.Storage {
		t.Errorf("version %q served %v storage %v", v.Name, v.Served, v.Storage)
	}
	if v.Subresources == nil || v.Subresources.Status == nil {
		t.Error("no status subresource")
	}
	var cols []string
	for _, c := range v.AdditionalPrinterColumns {
		if c.Priority == 0 {
			cols = append(cols, c.Name+"="+c.JSONPath)
		}
	}
	want := []string{"JobID=.status.jobIDF58", "Phase=.status.phase", "Reason=.status.pending.reason", "Exit=.status.exitStatus",
		"Age=.metadata.creationTimestamp", "Duration=.status.duration"}
	if !slices.Equal(cols, want) {
		t.Errorf("printer columns = %v, want %v", cols, want)
	}
	spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
	if u := spec.Properties["urgency"]; u.Default == nil || string(u.Default.Raw) != "16" {
		t.Errorf("spec.urgency default = %v, want 16", u.Default)
	}
	if !slices.Contains(v.Schema.OpenAPIV3Schema.Required, "spec") {
		t.Error("spec is not required")
	}
	for _, f := range []string{"jobspec", "attributes"} {
		p := spec.Properties[f]
		if p.Type != "object" || p.XPreserveUnknownFields == nil || !*p.XPreserveUnknownFields {
			t.Errorf("spec.%s: type %q preserve-unknown-fields %v; want a free-form object", f, p.Type, p.XPreserveUnknownFields)
		}
	}
}
