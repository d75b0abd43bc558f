package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestFluxSidecarDurability checks what keeps the Flux instance's state and
// bounds a job's reach (README "What survives what"), in config/default and
// in config/persistent (the PersistentVolumeClaim component):
//   - the statedir is on a volume (it outlives the flux container) with
//     statedir-cleanup=0; in config/persistent that volume is the claim;
//   - the broker reads flux-config, which configures the purge with the
//     flux-core 0.88 key names and a KVS checkpoint period, and the
//     manager's --flux-inactive-age-limit matches inactive-age-limit;
//   - the flux container has its own memory and ephemeral-storage limits,
//     and the jobs' /tmp is a size-limited tmpfs.
func TestFluxSidecarDurability(t *testing.T) {
	for _, dir := range []string{"default", "persistent"} {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, filepath.Join("config", dir))
			dep := decode[appsv1.Deployment](t, find(t, objs, "Deployment", wantDeployment))
			pod := &dep.Spec.Template.Spec
			cs := containers(t, pod)
			flux, mgr := cs[sidecarName].c, cs[managerName].c
			if got := brokerAttr(flux, "statedir-cleanup"); got != "0" {
				t.Errorf("statedir-cleanup=%q, want 0", got)
			}
			vol, _ := mountFor(flux, filepath.Join(brokerAttr(flux, "statedir"), "content.sqlite"))
			v := volume(pod, vol)
			switch {
			case v == nil:
				t.Fatal("the statedir is on no volume")
			case dir == "default" && v.EmptyDir == nil:
				t.Errorf("statedir volume %q is not an emptyDir", vol)
			case dir == "persistent":
				if v.PersistentVolumeClaim == nil || v.EmptyDir != nil {
					t.Fatalf("statedir volume %q is %+v, want only a PersistentVolumeClaim", vol, v.VolumeSource)
				}
				pvc := decode[corev1.PersistentVolumeClaim](t, find(t, objs, "PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName))
				if pvc.Namespace != wantNamespace || !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOnce) {
					t.Errorf("claim %s in %q, modes %v", pvc.Name, pvc.Namespace, pvc.Spec.AccessModes)
				}
				if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
					t.Error("a ReadWriteOnce statedir needs one replica and strategy Recreate")
				}
			}

			// The broker's config: purge and checkpoint keys.
			confDir := argValue(flux.Args, "--config-path")
			cvol, _ := mountFor(flux, filepath.Join(confDir, "job-manager.toml"))
			cv := volume(pod, cvol)
			if confDir == "" || cv == nil || cv.ConfigMap == nil {
				t.Fatalf("the broker has no --config-path on a ConfigMap (%q, volume %q)", confDir, cvol)
			}
			cm := decode[corev1.ConfigMap](t, find(t, objs, "ConfigMap", cv.ConfigMap.Name))
			jm, kvs := cm.Data["job-manager.toml"], cm.Data["kvs.toml"]
			for _, want := range []string{"[job-manager]", `inactive-age-limit = "7d"`, "inactive-num-limit = "} {
				if !strings.Contains(jm, want) {
					t.Errorf("job-manager.toml lacks %q:\n%s", want, jm)
				}
			}
			if !strings.Contains(kvs, "[kvs]") || !strings.Contains(kvs, "checkpoint-period = ") {
				t.Errorf("kvs.toml sets no checkpoint-period:\n%s", kvs)
			}
			if got := argValue(mgr.Args, "--flux-inactive-age-limit"); got != "168h" {
				t.Errorf("manager --flux-inactive-age-limit=%q, want 168h (= 7d)", got)
			}

			// Limits of its own, and a tmpfs /tmp.
			for _, r := range []corev1.ResourceName{corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
				if q, ok := flux.Resources.Limits[r]; !ok || q.IsZero() {
					t.Errorf("the flux container has no %s limit", r)
				}
			}
			tvol, _ := mountFor(flux, "/tmp/x")
			tv := volume(pod, tvol)
			if tv == nil || tv.EmptyDir == nil || tv.EmptyDir.Medium != corev1.StorageMediumMemory || tv.EmptyDir.SizeLimit == nil {
				t.Fatalf("/tmp is not a size-limited tmpfs: %+v", tv)
			}
			if mem := flux.Resources.Limits[corev1.ResourceMemory]; tv.EmptyDir.SizeLimit.Cmp(mem) >= 0 {
				t.Errorf("/tmp (%s) is not smaller than the flux container's memory limit (%s)", tv.EmptyDir.SizeLimit, &mem)
			}
		})
	}
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
