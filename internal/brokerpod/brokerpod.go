// Package brokerpod finds the container a FluxEndpoint's miniCluster or
// pod connection reaches its broker in: the pod (the MiniCluster's lead
// broker pod, the named pod, or the first Running pod matching a
// selector and controlled by the named owner), the container, the
// broker's socket there and the relay command. The manager (controllers)
// resolves a FluxEndpoint with it under its own service account, and the
// kubectl plugin under the user's credentials, so both exec into the same
// container.
//
// Labels are never trusted on their own: whoever may create a pod in the
// namespace can copy them, and the pod found receives every admitted
// namespace's jobspecs and answers for their results. A pod is used only
// if its controller ownerReference names, by UID, the owner the
// FluxEndpoint names (for a MiniCluster: the MiniCluster's Job, itself
// controlled by the MiniCluster, checked by UID too).
package brokerpod

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Labels flux-operator puts on a MiniCluster's pods: the MiniCluster is an
// indexed Job named after it, and the batch Job controller labels each pod
// with the Job's name and its completion index; index 0 is the lead
// broker (flux-operator pkg/flux: the broker with rank 0 is the pod with
// job index 0). Used here without importing flux-operator's module. They
// only narrow the search: ownership decides.
const (
	MiniClusterJobNameLabel  = "job-name"
	MiniClusterJobIndexLabel = "job-index"
)

// MiniClusterGroup is flux-operator's API group; the MiniCluster kind is
// read as metadata only (PartialObjectMetadata), in the version the Job's
// ownerReference names.
const (
	MiniClusterGroup = "flux-framework.org"
	MiniClusterKind  = "MiniCluster"
)

// ownerKinds are the controllers a pod connection's owner may name.
var ownerKinds = map[string]schema.GroupVersionKind{
	"StatefulSet": {Group: "apps", Version: "v1", Kind: "StatefulSet"},
	"ReplicaSet":  {Group: "apps", Version: "v1", Kind: "ReplicaSet"},
	"DaemonSet":   {Group: "apps", Version: "v1", Kind: "DaemonSet"},
	"Job":         {Group: "batch", Version: "v1", Kind: "Job"},
}

// Rules are the permissions Find and an exec need in a namespace that
// holds broker pods: what config/components/pod-exec grants the manager
// there (config/kustomize_test.go checks that the component's role is
// exactly this), and what a kubectl fluxjob user needs to follow a
// FluxJob to such an instance.
var Rules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
	// create: the exec itself; get: a WebSocket exec is a GET, which
	// older API servers authorise as get.
	{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
	// The owners, read by name to compare their UID with the pod's
	// ownerReference.
	{APIGroups: []string{"apps"}, Resources: []string{"daemonsets", "replicasets", "statefulsets"}, Verbs: []string{"get"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get"}},
	{APIGroups: []string{MiniClusterGroup}, Resources: []string{"miniclusters"}, Verbs: []string{"get"}},
}

// ErrNotOwned marks a pod that matched by name or labels but is not
// controlled by the owner the connection names (a decoy, or a pod of
// something else).
var ErrNotOwned = errors.New("not controlled by the named owner")

// Find resolves a miniCluster or pod connection with r (it reads pods:
// get for a named pod, list for a selector or a MiniCluster; and the
// owners, by name). The pod must be Running, controlled by the owner the
// connection names (see the package comment) and have the container.
func Find(ctx context.Context, r client.Reader, c fluxjobv1.FluxEndpointConnection) (podexec.Target, error) {
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
		pod, err = leadBroker(ctx, r, mc.Namespace, mc.Name)
	case c.Pod != nil:
		p := c.Pod
		t = podexec.Target{Namespace: p.Namespace, Container: p.Container, SocketPath: p.SocketPath, Command: p.Command}
		pod, err = namedOrSelected(ctx, r, p)
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

// leadBroker returns the MiniCluster's lead broker pod: the one Running
// pod with job-name=<name>,job-index=0 whose controller is the Job <name>
// (by UID), whose controller is the MiniCluster <name> (by UID).
func leadBroker(ctx context.Context, r client.Reader, ns, name string) (*corev1.Pod, error) {
	what := fmt.Sprintf("the lead broker pod of MiniCluster %s/%s", ns, name)
	sel := labels.SelectorFromSet(labels.Set{MiniClusterJobNameLabel: name, MiniClusterJobIndexLabel: "0"})
	pods, err := runningPods(ctx, r, ns, sel, what)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no Running pod found: %s (labels %s)", what, sel)
	}
	job := schema.GroupVersionKind{Group: "batch", Version: "v1", Kind: "Job"}
	var owned []*corev1.Pod
	var refused []string
	for _, p := range pods {
		jobMeta, err := controlledBy(ctx, r, p, job, name)
		if err == nil {
			ref := metav1.GetControllerOfNoCopy(jobMeta)
			switch {
			case ref == nil || ref.Kind != MiniClusterKind || groupOf(ref.APIVersion) != MiniClusterGroup || ref.Name != name:
				err = fmt.Errorf("job %s/%s is not controlled by MiniCluster %s: %w", ns, jobMeta.GetName(), name, ErrNotOwned)
			default:
				gv, perr := schema.ParseGroupVersion(ref.APIVersion)
				if perr != nil {
					err = fmt.Errorf("job %s/%s: owner apiVersion %q: %w", ns, jobMeta.GetName(), ref.APIVersion, perr)
					break
				}
				_, err = readOwner(ctx, r, ns, gv.WithKind(MiniClusterKind), name, ref.UID)
			}
		}
		if err != nil {
			refused = append(refused, fmt.Sprintf("pod %s: %v", p.Name, err))
			continue
		}
		owned = append(owned, p)
	}
	switch len(owned) {
	case 1:
		return owned[0], nil
	case 0:
		return nil, fmt.Errorf("no Running pod found: %s owned by its Job and MiniCluster (pods with its labels that are not: %s): %w",
			what, strings.Join(refused, "; "), ErrNotOwned)
	}
	names := make([]string, len(owned))
	for i, p := range owned {
		names[i] = p.Name
	}
	return nil, fmt.Errorf("%s is ambiguous: %d Running pods %s claim it; refusing to pick one", what, len(owned), strings.Join(names, ", "))
}

// namedOrSelected returns the pod of a pod connection: by name (checked
// against p.Owner when given) or the first Running pod by name that
// matches p.Selector and is controlled by p.Owner.
func namedOrSelected(ctx context.Context, r client.Reader, p *fluxjobv1.PodConnection) (*corev1.Pod, error) {
	var owner schema.GroupVersionKind
	if p.Owner != nil {
		var ok bool
		if owner, ok = ownerKinds[p.Owner.Kind]; !ok {
			return nil, fmt.Errorf("spec.connection.pod.owner.kind %q is not one of StatefulSet, ReplicaSet, DaemonSet, Job", p.Owner.Kind)
		}
	}
	if p.Name != "" {
		pod := &corev1.Pod{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, pod); err != nil {
			return nil, fmt.Errorf("reading pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		if pod.Status.Phase != corev1.PodRunning {
			return nil, fmt.Errorf("pod %s/%s is %s, not Running", p.Namespace, p.Name, pod.Status.Phase)
		}
		if p.Owner != nil {
			if _, err := controlledBy(ctx, r, pod, owner, p.Owner.Name); err != nil {
				return nil, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		return pod, nil
	}
	if p.Owner == nil {
		return nil, fmt.Errorf("spec.connection.pod.selector needs spec.connection.pod.owner: labels alone do not identify a broker pod")
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Selector)
	if err != nil {
		return nil, fmt.Errorf("spec.connection.pod.selector: %w", err)
	}
	what := fmt.Sprintf("a pod matching %s in namespace %s controlled by %s %s", sel, p.Namespace, p.Owner.Kind, p.Owner.Name)
	pods, err := runningPods(ctx, r, p.Namespace, sel, what)
	if err != nil {
		return nil, err
	}
	var refused []string
	for _, pod := range pods {
		if _, err := controlledBy(ctx, r, pod, owner, p.Owner.Name); err != nil {
			refused = append(refused, fmt.Sprintf("pod %s: %v", pod.Name, err))
			continue
		}
		return pod, nil
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("no Running pod found: %s (matching pods that are not: %s): %w", what, strings.Join(refused, "; "), ErrNotOwned)
	}
	return nil, fmt.Errorf("no Running pod found: %s", what)
}

// controlledBy checks that pod's controller ownerReference names the
// object of kind gvk and name in the pod's namespace, with that object's
// current UID, and returns the object's metadata.
func controlledBy(ctx context.Context, r client.Reader, pod *corev1.Pod, gvk schema.GroupVersionKind, name string) (*metav1.PartialObjectMetadata, error) {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil {
		return nil, fmt.Errorf("it has no controller ownerReference, want %s %s: %w", gvk.Kind, name, ErrNotOwned)
	}
	if ref.Kind != gvk.Kind || groupOf(ref.APIVersion) != gvk.Group || ref.Name != name {
		return nil, fmt.Errorf("its controller is %s %s (%s), want %s %s (%s): %w", ref.Kind, ref.Name, ref.APIVersion, gvk.Kind, name, gvk.GroupVersion(), ErrNotOwned)
	}
	return readOwner(ctx, r, pod.Namespace, gvk, name, ref.UID)
}

// readOwner reads the metadata of the object gvk ns/name and checks that
// its UID is uid (an ownerReference with another UID names an object that
// no longer exists, or a made-up one).
func readOwner(ctx context.Context, r client.Reader, ns string, gvk schema.GroupVersionKind, name string, uid types.UID) (*metav1.PartialObjectMetadata, error) {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(gvk)
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
		return nil, fmt.Errorf("reading its owner %s %s/%s: %w", gvk.Kind, ns, name, err)
	}
	if obj.UID != uid {
		return nil, fmt.Errorf("its ownerReference names %s %s/%s with UID %s, but that object's UID is %s: %w", gvk.Kind, ns, name, uid, obj.UID, ErrNotOwned)
	}
	return obj, nil
}

// groupOf returns the group of an apiVersion ("" for the core group).
func groupOf(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}

// runningPods returns the Running pods (sorted by name, not being
// deleted) matching sel in ns.
func runningPods(ctx context.Context, r client.Reader, ns string, sel labels.Selector, what string) ([]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing pods for %s: %w", what, err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	var out []*corev1.Pod
	for i := range list.Items {
		if p := &list.Items[i]; p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp.IsZero() {
			out = append(out, p)
		}
	}
	return out, nil
}
