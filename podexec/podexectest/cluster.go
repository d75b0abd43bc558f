package podexectest

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RunPod makes pod (its Spec.NodeName is set here) Running on a new Node
// named node whose kubelet endpoint is k, through the API server of c
// (envtest: no scheduler, no kubelet, so the test writes the statuses). A
// pods/exec to it then reaches k.
func (k *Kubelet) RunPod(ctx context.Context, c client.Client, node string, pod *corev1.Pod) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	if err := c.Create(ctx, n); err != nil {
		return fmt.Errorf("creating node %s: %w", node, err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.Port)
	if err := c.Status().Update(ctx, n); err != nil {
		return fmt.Errorf("node %s status: %w", node, err)
	}
	pod.Spec.NodeName = node
	if err := c.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := c.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
