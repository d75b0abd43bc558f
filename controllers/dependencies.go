package controllers

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/fluxbridge/job"
	"github.com/fluxjob/fluxjob-operator/internal/jobspec"
)

// Dependencies between FluxJobs
//
// spec.dependsOn names FluxJobs of the same namespace. Flux enforces the
// conditions itself (flux-core 0.88's dependency-after jobtap plugin,
// src/modules/job-manager/plugins/dependency-after.c): a job submitted with
// attributes.system.dependencies [{"scheme": "afterok", "value": ID}] (what
// `flux submit --dependency=afterok:ID` writes, python/flux/job/_utils.py
// dependency_array_create) stays in the DEPEND state until the job ID meets
// the condition, and gets a fatal "dependency" exception when it never can
// ("dependency after-success=ID can never be satisfied"); a dependency on a
// job that already ended the wrong way refuses the submission ("dependency:
// afterok: job ID failed or was canceled"). What the controller adds is the
// part Flux cannot do: it holds the submission until every named FluxJob has
// a Flux job ID, which needs no Flux at all and survives restarts because it
// is recomputed from the objects each time. A dependency that will never get
// an ID (it ended without one, or the FluxJobs wait on each other in a
// cycle) fails the dependant at once instead of holding it for ever; one
// that does not exist is waited for (kubectl apply -k creates objects in
// any order) and reported in the DependenciesReady condition.

// dependsOnIndex is the cache field index of spec.dependsOn[].name: the
// dependants of a FluxJob are the FluxJobs of its namespace indexed under
// its name.
const dependsOnIndex = "spec.dependsOn.name"

// maxDependencyWalk bounds the FluxJobs the cycle check visits.
const maxDependencyWalk = 512

// hold is why a FluxJob is not submitted yet: a reason for a condition and
// a message for the status.
type hold struct {
	Reason  string
	Message string
}

// resolveDependencies returns obj's dependencies as RFC 26 entries (each
// named FluxJob's Flux job ID with its condition's scheme, then
// spec.beginTime), or what obj still waits for, or a failure when a
// dependency can never be met.
func resolveDependencies(ctx context.Context, c client.Reader, obj *fluxjobv1.FluxJob, instance string) ([]job.Dependency, *hold, *failure, error) {
	deps := make([]job.Dependency, 0, len(obj.Spec.DependsOn)+1)
	var waiting []string
	var notFound []string
	var never *failure
	for _, d := range obj.Spec.DependsOn {
		var dep fluxjobv1.FluxJob
		err := c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: d.Name}, &dep)
		switch {
		case apierrors.IsNotFound(err):
			notFound = append(notFound, d.Name)
			continue
		case err != nil:
			return nil, nil, nil, fmt.Errorf("reading dependency FluxJob %s: %w", d.Name, err)
		case dep.Spec.Array != nil:
			// No one Flux job stands for an array: its phase decides (array.go).
			ok, f := arrayDependency(d, &dep)
			if f != nil && never == nil {
				never = f
			}
			if ok || f != nil {
				continue
			}
		case dep.Status.JobID != 0 && readMarker(&dep).Instance != "" && readMarker(&dep).Instance != instance:
			// Flux job IDs are per instance: Flux cannot see a job of
			// another one.
			return nil, nil, &failure{Reason: fluxjobv1.ReasonDependencyFailed, Message: fmt.Sprintf(
				"dependency on FluxJob %q can never be satisfied: it runs on Flux instance %q, this FluxJob on %q",
				d.Name, readMarker(&dep).Instance, instance)}, nil
		case retriesUnsettled(&dep, d.Condition):
			// Its current job may fail and be retried as another job:
			// depend on the one that ends it (retry.go).
			waiting = append(waiting, fmt.Sprintf("%s (%s, may retry: waiting for it to end)", d.Name, dep.Status.Phase))
			continue
		case dep.Status.JobID != 0:
			deps = append(deps, job.Dependency{Scheme: jobspec.Scheme(d.Condition), Value: job.ID(dep.Status.JobID).F58()})
			continue
		case dep.Status.Phase.IsTerminal():
			if never == nil {
				never = &failure{Reason: fluxjobv1.ReasonDependencyFailed, Message: fmt.Sprintf(
					"dependency %s on FluxJob %q can never be satisfied: it ended %s without a Flux job (%s)",
					jobspec.Scheme(d.Condition), d.Name, dep.Status.Phase, dep.Status.Message)}
			}
			continue
		}
		phase := dep.Status.Phase
		if phase == "" {
			phase = fluxjobv1.PhasePending
		}
		waiting = append(waiting, fmt.Sprintf("%s (%s)", d.Name, phase))
	}
	if len(waiting) > 0 || never != nil {
		// A cycle is reported as one even when another member of it
		// already failed (for being in it).
		cycle, err := dependencyCycle(ctx, c, obj)
		if err != nil {
			return nil, nil, nil, err
		}
		if cycle != nil {
			return nil, nil, &failure{Reason: fluxjobv1.ReasonDependencyCycle, Message: fmt.Sprintf(
				"spec.dependsOn forms a cycle, none of these FluxJobs can ever be submitted: %s", strings.Join(cycle, " -> "))}, nil
		}
	}
	switch {
	case never != nil:
		return nil, nil, never, nil
	case len(notFound) > 0:
		return nil, &hold{Reason: fluxjobv1.ReasonDependencyNotFound, Message: fmt.Sprintf(
			"waiting for dependency FluxJob %s to be created in namespace %s", quoteList(notFound), obj.Namespace)}, nil, nil
	case len(waiting) > 0:
		return nil, &hold{Reason: fluxjobv1.ReasonWaitingForDependency, Message: fmt.Sprintf(
			"waiting for dependency FluxJob %s to get a Flux job ID", strings.Join(waiting, ", "))}, nil, nil
	}
	return append(deps, jobspec.BeginTime(obj)...), nil, nil, nil
}

// quoteList quotes names for a message, at most three of them.
func quoteList(names []string) string {
	q := make([]string, 0, 4)
	for i, n := range names {
		if i == 3 {
			q = append(q, fmt.Sprintf("and %d more", len(names)-3))
			break
		}
		q = append(q, strconv.Quote(n))
	}
	return strings.Join(q, ", ")
}

// dependencyCycle looks for a path from obj back to itself through the
// dependsOn of FluxJobs that have no Flux job ID (one with an ID no longer
// waits on anything; one that ended without an ID is still part of a
// cycle), and returns it, or nil. The walk is bounded
// (maxDependencyWalk FluxJobs); a graph larger than that is not reported
// as a cycle.
func dependencyCycle(ctx context.Context, c client.Reader, obj *fluxjobv1.FluxJob) ([]string, error) {
	visited := map[string]bool{}
	var path []string
	var walk func(name string, deps []fluxjobv1.Dependency) ([]string, error)
	walk = func(name string, deps []fluxjobv1.Dependency) ([]string, error) {
		path = append(path, name)
		defer func() { path = path[:len(path)-1] }()
		for _, d := range deps {
			if d.Name == obj.Name {
				return append(append([]string(nil), path...), obj.Name), nil
			}
			if visited[d.Name] || len(visited) >= maxDependencyWalk {
				continue
			}
			visited[d.Name] = true
			var dep fluxjobv1.FluxJob
			err := c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: d.Name}, &dep)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("reading dependency FluxJob %s: %w", d.Name, err)
			}
			if dep.Status.JobID != 0 || len(dep.Spec.DependsOn) == 0 {
				continue
			}
			if c, err := walk(d.Name, dep.Spec.DependsOn); c != nil || err != nil {
				return c, err
			}
		}
		return nil, nil
	}
	return walk(obj.Name, obj.Spec.DependsOn)
}

// indexDependsOn registers dependsOnIndex with mgr's cache. FluxJobs
// without spec.dependsOn add nothing to the index.
func indexDependsOn(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &fluxjobv1.FluxJob{}, dependsOnIndex, func(o client.Object) []string {
		fj, ok := o.(*fluxjobv1.FluxJob)
		if !ok || len(fj.Spec.DependsOn) == 0 {
			return nil
		}
		names := make([]string, len(fj.Spec.DependsOn))
		for i, d := range fj.Spec.DependsOn {
			names[i] = d.Name
		}
		return names
	})
}

// dependants maps a FluxJob to the FluxJobs of its namespace that depend
// on it (through dependsOnIndex), so that they are reconciled when it gets
// a job ID, ends, appears or goes away.
func dependants(ctx context.Context, c client.Reader, o client.Object) []reconcile.Request {
	var list fluxjobv1.FluxJobList
	if err := c.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{dependsOnIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "listing the dependants of a FluxJob", "fluxjob", key(o))
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		d := &list.Items[i]
		// A dependant already submitted has nothing to wait for.
		if d.Status.JobID == 0 && !d.Status.Phase.IsTerminal() {
			reqs = append(reqs, reconcile.Request{NamespacedName: key(d)})
		}
	}
	return reqs
}

// dependencyChanged passes the FluxJob events a dependant may be waiting
// for: creation, deletion, a job ID that appears, a phase that becomes
// final. Every other status write (most of them) is filtered out before the
// index lookup.
func dependencyChanged() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*fluxjobv1.FluxJob)
			n, ok2 := e.ObjectNew.(*fluxjobv1.FluxJob)
			if !ok1 || !ok2 {
				return false
			}
			return o.Status.JobID != n.Status.JobID || o.Status.Phase.IsTerminal() != n.Status.Phase.IsTerminal() ||
				n.Spec.Array != nil && o.Status.Phase != n.Status.Phase
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
