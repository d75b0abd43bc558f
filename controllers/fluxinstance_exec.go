package controllers

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
)

// Labels flux-operator puts on a MiniCluster's pods: the MiniCluster is an
// indexed Job named after it, and the batch Job controller labels each pod
// with the Job's name and its completion index; index 0 is the lead
// broker (flux-operator pkg/flux: the broker with rank 0 is the pod with
// job index 0). Used here without importing flux-operator's module.
const (
	miniClusterJobNameLabel  = "job-name"
	miniClusterJobIndexLabel = "job-index"
)

// Reaching a broker in a pod needs to find the pod and exec into it. These
// are the only Pod permissions the manager has, and only miniCluster and
// pod connections use them; a deployment without such FluxInstances can
// drop them from config/rbac/role.yaml.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/exec,verbs=create;get

// execTarget finds the pod and container of a miniCluster or pod
// connection. It returns the pod's UID too: a new pod (the MiniCluster
// was re-created) makes a new connection.
func (r *FluxInstanceReconciler) execTarget(ctx context.Context, c fluxjobv1.FluxInstanceConnection) (ExecTarget, string, error) {
	var t ExecTarget
	var pod *corev1.Pod
	var err error
	switch {
	case c.MiniCluster != nil:
		mc := c.MiniCluster
		t = ExecTarget{Namespace: mc.Namespace, Container: mc.Container, SocketPath: mc.SocketPath, Command: mc.Command}
		if t.Container == "" {
			t.Container = mc.Name // flux-operator names the flux container after the MiniCluster
		}
		if t.SocketPath == "" {
			t.SocketPath = fluxjobv1.DefaultMiniClusterSocket
		}
		sel := labels.SelectorFromSet(labels.Set{miniClusterJobNameLabel: mc.Name, miniClusterJobIndexLabel: "0"})
		pod, err = r.runningPod(ctx, mc.Namespace, sel, fmt.Sprintf("the lead broker pod of MiniCluster %s/%s (labels %s)", mc.Namespace, mc.Name, sel))
	case c.Pod != nil:
		p := c.Pod
		t = ExecTarget{Namespace: p.Namespace, Container: p.Container, SocketPath: p.SocketPath, Command: p.Command}
		if p.Name != "" {
			pod = &corev1.Pod{}
			if err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, pod); err != nil {
				err = fmt.Errorf("reading pod %s/%s: %w", p.Namespace, p.Name, err)
			} else if pod.Status.Phase != corev1.PodRunning {
				err = fmt.Errorf("pod %s/%s is %s, not Running", p.Namespace, p.Name, pod.Status.Phase)
			}
		} else {
			var sel labels.Selector
			if sel, err = metav1.LabelSelectorAsSelector(p.Selector); err != nil {
				err = fmt.Errorf("spec.connection.pod.selector: %w", err)
			} else {
				pod, err = r.runningPod(ctx, p.Namespace, sel, fmt.Sprintf("a pod matching %s in namespace %s", sel, p.Namespace))
			}
		}
	}
	if err != nil {
		return t, "", err
	}
	t.Pod = pod.Name
	if t.Container == "" && len(pod.Spec.Containers) > 0 {
		t.Container = pod.Spec.Containers[0].Name
	}
	found := false
	for _, ct := range pod.Spec.Containers {
		found = found || ct.Name == t.Container
	}
	if !found {
		return t, "", fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, t.Container)
	}
	return t, string(pod.UID), nil
}

// runningPod returns the first Running pod (by name) matching sel in ns.
func (r *FluxInstanceReconciler) runningPod(ctx context.Context, ns string, sel labels.Selector, what string) (*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing pods for %s: %w", what, err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	for i := range list.Items {
		if p := &list.Items[i]; p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp.IsZero() {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no Running pod found: %s", what)
}
