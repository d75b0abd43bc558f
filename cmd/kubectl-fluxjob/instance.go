package main

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
	"github.com/fluxjob/fluxjob-operator/podexec"
)

// Following a FluxJob to its Flux instance
//
// The plugin goes where the manager sent the FluxJob (controllers/route.go):
// the instance named by status.instance (recorded at submission), else
// spec.instance, else the default one (the FluxEndpoint annotated
// fluxendpoint.fluxjob.io/is-default-class=true, else the manager's
// implicit instance). The implicit instance (named by --default-instance,
// "default" unless the manager was started otherwise) is the operator's
// sidecar, reached as the --flux-* flags' defaults say. A FluxEndpoint is
// read with the user's credentials (get fluxendpoints; list fluxendpoints
// only to find the default one) and reached the way the manager reaches
// it: its uri dialled from this machine (ssh:// with the user's own agent,
// keys and known_hosts, never the Secret the manager uses), or pods/exec
// into the container package brokerpod finds for a miniCluster or pod
// connection. Any --flux-* flag overrides all of this.

// broker is where Flux is: a URI dialled from this machine, or a container
// to exec the relay in.
type broker struct {
	uri string
	pod podexec.Target // when uri is ""
	// via says how the broker was found, for errors (" (FluxEndpoint x)").
	via string
}

// instanceOf returns the name of the instance obj runs on as far as obj
// says (status.instance, else spec.instance) and which field said it; ""
// when obj leaves it to the default.
func instanceOf(obj *fluxjobv1.FluxJob) (name, field string) {
	switch {
	case obj.Status.Instance != "":
		return obj.Status.Instance, "status.instance"
	case obj.Spec.Instance != "":
		return obj.Spec.Instance, "spec.instance"
	}
	return "", ""
}

// brokerFor returns the broker of obj's Flux instance, or the one the
// --flux-* flags name when any was given.
func (a *app) brokerFor(ctx context.Context, obj *fluxjobv1.FluxJob) (broker, error) {
	if a.opts.target.Explicit {
		return a.flagBroker(ctx)
	}
	name, field := instanceOf(obj)
	if name == "" {
		var err error
		if name, err = a.defaultInstance(ctx, obj); err != nil {
			return broker{}, err
		}
		field = "the default instance"
	}
	if name == a.opts.target.Implicit {
		b, err := a.flagBroker(ctx)
		if err != nil {
			return broker{}, fmt.Errorf("FluxJob %s runs on the manager's implicit instance %q (%s): %w", obj.Name, name, field, err)
		}
		b.via = fmt.Sprintf(" (the implicit instance %q)", name)
		return b, nil
	}
	var fi fluxjobv1.FluxEndpoint
	if err := a.kube.Get(ctx, types.NamespacedName{Name: name}, &fi); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return broker{}, fmt.Errorf("FluxJob %s runs on FluxEndpoint %q (%s), which does not exist (--flux-uri or --flux-pod say where Flux is instead)", obj.Name, name, field)
		case apierrors.IsForbidden(err):
			return broker{}, fmt.Errorf("FluxJob %s runs on FluxEndpoint %q (%s), which you may not read: the plugin needs `get fluxendpoints` (cluster-scoped, group fluxjob.io) to find its Flux instance, or --flux-uri / --flux-pod to say where Flux is: %w", obj.Name, name, field, err)
		}
		return broker{}, fmt.Errorf("reading FluxEndpoint %q (%s of FluxJob %s): %w", name, field, obj.Name, err)
	}
	b, err := brokerOf(ctx, a.kube, &fi)
	if err != nil {
		return broker{}, fmt.Errorf("FluxJob %s runs on FluxEndpoint %q (%s): %w", obj.Name, name, field, err)
	}
	return b, nil
}

// defaultInstance is the instance a FluxJob without spec.instance runs on,
// as the manager chooses it (InstanceRegistry.Default): the one
// FluxEndpoint annotated default, else the implicit instance.
func (a *app) defaultInstance(ctx context.Context, obj *fluxjobv1.FluxJob) (string, error) {
	var list fluxjobv1.FluxEndpointList
	if err := a.kube.List(ctx, &list); err != nil {
		if apierrors.IsForbidden(err) {
			return "", fmt.Errorf("FluxJob %s names no instance, and finding the default FluxEndpoint needs `list fluxendpoints` (cluster-scoped, group fluxjob.io), or --flux-uri / --flux-pod to say where Flux is: %w", obj.Name, err)
		}
		return "", fmt.Errorf("finding the default FluxEndpoint: %w", err)
	}
	var marked []string
	for i := range list.Items {
		if list.Items[i].IsDefault() && list.Items[i].DeletionTimestamp.IsZero() {
			marked = append(marked, list.Items[i].Name)
		}
	}
	name, reason, candidates := fluxjobv1.ChooseDefaultInstance(marked, a.opts.target.Implicit)
	switch reason {
	case "":
		return name, nil
	case fluxjobv1.ReasonAmbiguousDefaultInstance:
		return "", fmt.Errorf("FluxJob %s names no instance and %d FluxEndpoints are marked default (%s=true): %s",
			obj.Name, len(candidates), fluxjobv1.DefaultInstanceAnnotation, strings.Join(candidates, ", "))
	}
	return "", fmt.Errorf("FluxJob %s names no instance and no FluxEndpoint is marked default (%s=true)", obj.Name, fluxjobv1.DefaultInstanceAnnotation)
}

// brokerOf returns where fi's connection goes, reading pods with r for a
// miniCluster or pod connection.
func brokerOf(ctx context.Context, r client.Reader, fi *fluxjobv1.FluxEndpoint) (broker, error) {
	c := fi.Spec.Connection
	via := fmt.Sprintf(" (FluxEndpoint %s)", fi.Name)
	if c.URI != "" {
		return broker{uri: c.URI, via: via}, nil
	}
	t, err := brokerpod.Find(ctx, r, c)
	if err != nil {
		return broker{}, err
	}
	return broker{pod: t, via: via}, nil
}
