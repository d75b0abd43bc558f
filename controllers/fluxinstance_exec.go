package controllers

import (
	"context"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Reaching a broker in a pod needs to find the pod and exec into it. These
// are the only Pod permissions the manager has, and only miniCluster and
// pod connections use them; a deployment without such FluxInstances can
// drop them from config/rbac/role.yaml.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/exec,verbs=create;get
// The broker pod's owners, read by name to check the pod's ownerReference
// UIDs (brokerpod.Find: labels alone are not trusted).
// +kubebuilder:rbac:groups=apps,resources=daemonsets;replicasets;statefulsets,verbs=get
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get
// +kubebuilder:rbac:groups=flux-framework.org,resources=miniclusters,verbs=get

// execTarget finds the pod and container of a miniCluster or pod
// connection (package brokerpod, shared with the kubectl plugin). The
// target carries the pod's UID: a new pod (the MiniCluster was
// re-created) makes a new connection.
func (r *FluxInstanceReconciler) execTarget(ctx context.Context, c fluxjobv1.FluxInstanceConnection) (podexec.Target, error) {
	return brokerpod.Find(ctx, r.APIReader, c)
}
