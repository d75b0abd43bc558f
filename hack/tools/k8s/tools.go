//go:build tools

// Package k8stools records the Kubernetes commands hack/envtest.sh builds,
// so that go.mod and go.sum hold everything they need.
package k8stools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
