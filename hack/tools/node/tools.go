//go:build tools

// Package nodetools records the Kubernetes commands hack/node-bins.sh builds,
// so that go.mod and go.sum hold everything they need.
package nodetools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
