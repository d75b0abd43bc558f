// Package v1alpha1 contains the FluxJob API, version v1alpha1, of the fluxjob.io group.
//
// A FluxJob asks the fluxjob-operator to run one job on a Flux (flux-core) instance. The spec
// is either a complete Flux jobspec (version 1) or a command with a few resource options; it is
// immutable once created, except for spec.urgency. The status mirrors the Flux job: its ID, phase,
// exit status, eventlog (bounded), exception, times and conditions that follow the kstatus
// conventions (Ready, Reconciling, Stalled) used by GitOps tools.
//
// +kubebuilder:object:generate=true
// +groupName=fluxjob.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the objects in this package.
	GroupVersion = schema.GroupVersion{Group: "fluxjob.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
