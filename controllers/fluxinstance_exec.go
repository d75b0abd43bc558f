package controllers

import (
	"context"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Reaching a broker in a pod needs to find the pod, check its owners and
// exec into it. The manager's generated ClusterRole grants none of that:
// config/components/pod-exec grants brokerpod.Rules through RoleBindings in
// the namespaces it lists, which the manager is told with
// --exec-namespaces (ExecNamespaces); a FluxInstance naming another
// namespace is refused before any pod is read (execAllowed).

// execTarget finds the pod and container of a miniCluster or pod
// connection (package brokerpod, shared with the kubectl plugin). The
// target carries the pod's UID: a new pod (the MiniCluster was
// re-created) makes a new connection.
func (r *FluxInstanceReconciler) execTarget(ctx context.Context, c fluxjobv1.FluxInstanceConnection) (podexec.Target, error) {
	return brokerpod.Find(ctx, r.APIReader, c)
}
