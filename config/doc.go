// Package config holds the kustomize manifests that deploy the FluxJob
// controller (crd, rbac, manager with its Flux sidecar, default, samples).
// The Go code here is only the tests that render and check them.
package config
