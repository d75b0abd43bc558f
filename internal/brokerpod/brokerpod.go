// Package brokerpod finds the container a FluxInstance's miniCluster or
// pod connection reaches its broker in: the pod (the MiniCluster's lead
// broker pod, the named pod, or the first Running pod matching a
// selector), the container, the broker's socket there and the relay
// command. The manager (controllers) resolves a FluxInstance with it
// under its own service account, and the kubectl plugin under the user's
// credentials, so both exec into the same container.
package brokerpod

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
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Labels flux-operator puts on a MiniCluster's pods: the MiniCluster is an
// indexed Job named after it, and the batch Job controller labels each pod
// with the Job's name and its completion index; index 0 is the lead
// broker (flux-operator pkg/flux: the broker with rank 0 is the pod with
// job index 0). Used here without importing flux-operator's module.
const (
	MiniClusterJobNameLabel  = "job-name"
	MiniClusterJobIndexLabel = "job-index"
)

// Find resolves a miniCluster or pod connection with r (it reads pods:
// get for a named pod, list for a selector or a MiniCluster). The pod must
// be Running and have the container.
func Find(ctx context.Context, r client.Reader, c fluxjobv1.FluxInstanceConnection) (podexec.Target, error) {
	var t podexec.Target
	var pod *corev1.Pod
	var err error
	switch {
	case c.MiniCluster != nil:
		mc := c.MiniCluster
		t = podexec.Target{Namespace: mc.Namespace, Container: mc.Container, SocketPath: mc.SocketPath, Command: mc.Command}
		if t.Container == "" {
			t.Container = mc.Name // flux-operator names the flux container after the MiniCluster
		}
		if t.SocketPath == "" {
			t.SocketPath = fluxjobv1.DefaultMiniClusterSocket
		}
		sel := labels.SelectorFromSet(labels.Set{MiniClusterJobNameLabel: mc.Name, MiniClusterJobIndexLabel: "0"})
		pod, err = runningPod(ctx, r, mc.Namespace, sel, fmt.Sprintf("the lead broker pod of MiniCluster %s/%s (labels %s)", mc.Namespace, mc.Name, sel))
	case c.Pod != nil:
		p := c.Pod
		t = podexec.Target{Namespace: p.Namespace, Container: p.Container, SocketPath: p.SocketPath, Command: p.Command}
		if p.Name != "" {
			pod = &corev1.Pod{}
			if err = r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, pod); err != nil {
				err = fmt.Errorf("reading pod %s/%s: %w", p.Namespace, p.Name, err)
			} else if pod.Status.Phase != corev1.PodRunning {
				err = fmt.Errorf("pod %s/%s is %s, not Running", p.Namespace, p.Name, pod.Status.Phase)
			}
		} else {
			var sel labels.Selector
			if sel, err = metav1.LabelSelectorAsSelector(p.Selector); err != nil {
				err = fmt.Errorf("spec.connection.pod.selector: %w", err)
			} else {
				pod, err = runningPod(ctx, r, p.Namespace, sel, fmt.Sprintf("a pod matching %s in namespace %s", sel, p.Namespace))
			}
		}
	default:
		return t, fmt.Errorf("the connection names neither a miniCluster nor a pod")
	}
	if err != nil {
		return t, err
	}
	t.Pod, t.PodUID = pod.Name, string(pod.UID)
	if t.Container == "" && len(pod.Spec.Containers) > 0 {
		t.Container = pod.Spec.Containers[0].Name
	}
	for _, ct := range pod.Spec.Containers {
		if ct.Name == t.Container {
			return t, nil
		}
	}
	return t, fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, t.Container)
}

// runningPod returns the first Running pod (by name) matching sel in ns.
func runningPod(ctx context.Context, r client.Reader, ns string, sel labels.Selector, what string) (*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
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
