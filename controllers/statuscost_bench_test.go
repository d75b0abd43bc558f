package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fluxjobv1 "github.com/fluxjob/fluxjob-operator/api/v1alpha1"
	"github.com/fluxjob/fluxjob-operator/internal/broker"
)

// BenchmarkControllerStatusLevers takes apart what a FluxJob status write
// costs kube-apiserver and etcd (issue 15 part 4: a status patch cost
// 2.3x a create), one lever at a time, in the style of
// BenchmarkControllerAPIServerCost: 1,000 requests per row from 8
// concurrent clients, one watch per resource as the manager's informer
// has, apiserver+etcd CPU per request. Every row but create writes the
// final status of a FluxJob of `true` (about 2 KB of JSON, 7 conditions,
// 10 eventlog entries) to a FluxJob just created, unless it says
// otherwise:
//
//   - patch type: merge patch with the resourceVersion precondition (what
//     the controller sends), the same without it, a JSON patch (RFC 6902)
//     with a resourceVersion test, a server-side apply, a PUT (update);
//   - content: only phase and observedGeneration; the status without its
//     conditions; the final status written over the Running status the
//     controller wrote first (the second write of a real FluxJob);
//   - validation: the CRD without CEL rules, the CRD with no schema for
//     status at all (x-kubernetes-preserve-unknown-fields);
//   - size alone: a 2 KB annotation patched on the object itself.
//
// With $BENCH_PROFILE_DIR set, each row's kube-apiserver and etcd CPU
// profiles are written there (apiserver-StatusLevers-<row>.cpu.pprof).
func BenchmarkControllerStatusLevers(b *testing.B) {
	const n = 1000
	e := newControlPlane(b)
	plain := e.installPlainCRD(b)
	loose := e.installCRDVariant(b, "loose.fluxjob.io", looseStatus)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ns := e.namespace(b)
	fluxjob := fluxjobv1.GroupVersion.WithKind("FluxJob")
	for _, gvk := range []schema.GroupVersionKind{fluxjob, plain, loose} {
		e.drainWatch(b, ctx, ns, gvk)
	}
	final := benchStatus()
	running := benchRunningStatus()
	mergeLocked := func(st map[string]any) func(context.Context, *unstructured.Unstructured) error {
		return func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.Object["status"] = st
			return e.c.Status().Patch(ctx, obj, clientMergeLocked(base))
		}
	}
	noConditions := maps.Clone(final)
	delete(noConditions, "conditions")
	annotation := strings.Repeat("x", 2000)
	rows := []struct {
		name    string
		gvk     schema.GroupVersionKind
		prepare func(context.Context, *unstructured.Unstructured) error // after the create, before the timed request
		do      func(context.Context, *unstructured.Unstructured) error // nil: the create is the timed request
	}{
		{name: "create", gvk: fluxjob},
		{name: "status-merge-locked", gvk: fluxjob, do: mergeLocked(final)},
		{name: "status-merge-unlocked", gvk: fluxjob, do: func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.Object["status"] = final
			return e.c.Status().Patch(ctx, obj, client.MergeFrom(base))
		}},
		{name: "status-json-patch", gvk: fluxjob, do: func(ctx context.Context, obj *unstructured.Unstructured) error {
			st, err := json.Marshal(final)
			if err != nil {
				return err
			}
			patch := fmt.Sprintf(`[{"op":"test","path":"/metadata/resourceVersion","value":%q},{"op":"add","path":"/status","value":%s}]`,
				obj.GetResourceVersion(), st)
			return e.c.Status().Patch(ctx, obj, client.RawPatch(types.JSONPatchType, []byte(patch)))
		}},
		{name: "status-apply", gvk: fluxjob, do: func(ctx context.Context, obj *unstructured.Unstructured) error {
			data, err := json.Marshal(map[string]any{"apiVersion": obj.GetAPIVersion(), "kind": obj.GetKind(),
				"metadata": map[string]any{"name": obj.GetName(), "namespace": obj.GetNamespace()}, "status": final})
			if err != nil {
				return err
			}
			return e.c.Status().Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, data), client.FieldOwner("bench"), client.ForceOwnership)
		}},
		{name: "status-update", gvk: fluxjob, do: func(ctx context.Context, obj *unstructured.Unstructured) error {
			obj.Object["status"] = final
			return e.c.Status().Update(ctx, obj)
		}},
		{name: "status-phase-only", gvk: fluxjob, do: mergeLocked(map[string]any{"phase": "Succeeded", "observedGeneration": int64(1)})},
		{name: "status-without-conditions", gvk: fluxjob, do: mergeLocked(noConditions)},
		{name: "status-final-over-running", gvk: fluxjob, prepare: mergeLocked(running), do: mergeLocked(final)},
		{name: "status-without-cel", gvk: plain, do: mergeLocked(final)},
		{name: "status-without-status-schema", gvk: loose, do: mergeLocked(final)},
		{name: "annotation-2kb", gvk: fluxjob, do: func(ctx context.Context, obj *unstructured.Unstructured) error {
			base := obj.DeepCopy()
			obj.SetAnnotations(map[string]string{"bench.fluxjob.io/data": annotation})
			return e.c.Patch(ctx, obj, clientMergeLocked(base))
		}},
	}
	create := func(ctx context.Context, obj *unstructured.Unstructured) error { return e.c.Create(ctx, obj) }
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			var prepare func(context.Context, *unstructured.Unstructured) error
			switch {
			case row.prepare != nil:
				prepare = func(ctx context.Context, obj *unstructured.Unstructured) error {
					if err := create(ctx, obj); err != nil {
						return err
					}
					return row.prepare(ctx, obj)
				}
			case row.do != nil:
				prepare = create
			}
			e.requestCost(b, ctx, ns, n, row.gvk, prepare, row.do, true)
		})
	}
}

// benchRunningStatus is the status the controller writes for a FluxJob of
// `true` once Flux reported "start" (its first status write).
func benchRunningStatus() map[string]any {
	return benchStatusOf([]string{"validate", "depend", "priority", "alloc", "start"}, broker.Outcome{})
}

// looseStatus replaces the status schema of a CRD by a free-form object.
func looseStatus(crd map[string]any) {
	for _, v := range crd["spec"].(map[string]any)["versions"].([]any) {
		props := v.(map[string]any)["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)
		props["status"] = map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	}
}
