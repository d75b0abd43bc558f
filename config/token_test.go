package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// saTokenDir is where client-go's in-cluster config reads the service
// account's token, CA and namespace.
const saTokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenHolders returns, for every container of pod, how it could read a
// service-account token: the pod-level automount (the kubelet mounts the
// token into every container unless automountServiceAccountToken is false),
// a volume with a serviceAccountToken projection, a secret volume or a
// projected secret of type kubernetes.io/service-account-token (or one not
// among the rendered objects, which nobody can vouch for), or environment
// variables from such a secret. secrets maps the rendered Secrets' names to
// their types.
func tokenHolders(pod *corev1.PodSpec, secrets map[string]corev1.SecretType) map[string][]string {
	tokenSecret := func(name string) bool {
		typ, known := secrets[name]
		return !known || typ == corev1.SecretTypeServiceAccountToken
	}
	tokenVolumes := map[string]string{}
	for _, v := range pod.Volumes {
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					tokenVolumes[v.Name] = "projected serviceAccountToken"
				}
				if src.Secret != nil && tokenSecret(src.Secret.Name) {
					tokenVolumes[v.Name] = "projected secret " + src.Secret.Name + " (service-account token or unknown)"
				}
			}
		case v.Secret != nil && tokenSecret(v.Secret.SecretName):
			tokenVolumes[v.Name] = "secret " + v.Secret.SecretName + " (service-account token or unknown)"
		}
	}
	out := map[string][]string{}
	all := slices.Concat(pod.InitContainers, pod.Containers)
	for _, c := range all {
		var how []string
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			how = append(how, "automountServiceAccountToken is not false")
		}
		for _, m := range c.VolumeMounts {
			if why, ok := tokenVolumes[m.Name]; ok {
				how = append(how, "volume "+m.Name+" at "+m.MountPath+": "+why)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && tokenSecret(e.ValueFrom.SecretKeyRef.Name) {
				how = append(how, "env "+e.Name+" from secret "+e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil && tokenSecret(e.SecretRef.Name) {
				how = append(how, "envFrom secret "+e.SecretRef.Name)
			}
		}
		if len(how) > 0 {
			out[c.Name] = how
		}
	}
	return out
}

// tokenProblems checks pod against the rule: only the manager container
// can read a token, and it has exactly what in-cluster config needs.
func tokenProblems(pod *corev1.PodSpec, secrets map[string]corev1.SecretType) []string {
	var problems []string
	holders := tokenHolders(pod, secrets)
	for name, how := range holders {
		if name != managerName {
			problems = append(problems, "container "+name+" can read a token: "+strings.Join(how, "; "))
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		problems = append(problems, "the pod does not set automountServiceAccountToken: false")
	}
	var mgr *corev1.Container
	for i := range pod.Containers {
		if pod.Containers[i].Name == managerName {
			mgr = &pod.Containers[i]
		}
	}
	if mgr == nil {
		return append(problems, "no manager container")
	}
	vol, mp := mountFor(*mgr, filepath.Join(saTokenDir, "token"))
	if vol == "" || mp != saTokenDir {
		return append(problems, "the manager has no volume mounted at "+saTokenDir)
	}
	v := volume(pod, vol)
	if v == nil || v.Projected == nil {
		return append(problems, "the manager's "+saTokenDir+" is not a projected volume")
	}
	var token, ca, ns bool
	for _, src := range v.Projected.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			token = src.ServiceAccountToken.Path == "token" && src.ServiceAccountToken.Audience == ""
		case src.ConfigMap != nil && src.ConfigMap.Name == "kube-root-ca.crt":
			for _, it := range src.ConfigMap.Items {
				ca = ca || (it.Key == "ca.crt" && it.Path == "ca.crt")
			}
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				ns = ns || (it.Path == "namespace" && it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace")
			}
		}
	}
	if !token || !ca || !ns {
		problems = append(problems, "the manager's projected volume lacks the token (path token, API server audience), "+
			"kube-root-ca.crt's ca.crt or the downward-API namespace")
	}
	for _, m := range mgr.VolumeMounts {
		if m.Name == vol && !m.ReadOnly {
			problems = append(problems, "the manager mounts its token volume read-write")
		}
	}
	slices.Sort(problems)
	return problems
}

// renderedPods renders every kustomization under config/ and returns the
// pod template of each Deployment it holds, and the rendered Secrets'
// types.
func renderedPods(t *testing.T) (map[string]*corev1.PodSpec, map[string]corev1.SecretType) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("*", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*corev1.PodSpec{}
	secrets := map[string]corev1.SecretType{}
	for _, k := range dirs {
		dir := filepath.Dir(k)
		for _, o := range render(t, filepath.Join("config", dir)) {
			switch o.Kind {
			case "Deployment", "StatefulSet", "DaemonSet":
				dep := decode[appsv1.Deployment](t, o)
				pods["config/"+dir+": "+o.Kind+" "+o.Name] = &dep.Spec.Template.Spec
			case "Secret":
				s := decode[corev1.Secret](t, o)
				secrets[s.Name] = s.Type
			}
		}
	}
	if len(pods) == 0 {
		t.Fatal("no kustomization under config/ renders a Deployment")
	}
	return pods, secrets
}

// TestOnlyManagerSeesToken renders every kustomization in config/ and fails
// if any container but the manager can read a service-account token: every
// FluxJob's command runs in the flux sidecar, and a token there would give
// the manager's rights to whoever may create a FluxJob.
func TestOnlyManagerSeesToken(t *testing.T) {
	pods, secrets := renderedPods(t)
	for name, pod := range pods {
		t.Run(name, func(t *testing.T) {
			for _, p := range tokenProblems(pod, secrets) {
				t.Error(p)
			}
		})
	}
	if _, ok := pods["config/default: Deployment "+wantDeployment]; !ok {
		t.Errorf("config/default rendered no Deployment %s (have %v)", wantDeployment, keysOf(pods))
	}
}

// TestTokenCheckCatches feeds the check of TestOnlyManagerSeesToken the
// ways a token can reach the sidecar, one at a time, on the rendered
// Deployment, so that a check that cannot fail would fail here.
func TestTokenCheckCatches(t *testing.T) {
	dep, _ := renderDeployment(t)
	secrets := map[string]corev1.SecretType{"plain": corev1.SecretTypeOpaque, "sa": corev1.SecretTypeServiceAccountToken}
	if p := tokenProblems(&dep.Spec.Template.Spec, secrets); len(p) != 0 {
		t.Fatalf("the rendered Deployment already fails the check: %v", p)
	}
	sidecar := func(pod *corev1.PodSpec) *corev1.Container {
		for i := range pod.InitContainers {
			if pod.InitContainers[i].Name == sidecarName {
				return &pod.InitContainers[i]
			}
		}
		t.Fatal("no flux sidecar")
		return nil
	}
	for _, tc := range []struct {
		name   string
		mutate func(pod *corev1.PodSpec)
		want   string
	}{
		{"automount on", func(pod *corev1.PodSpec) { pod.AutomountServiceAccountToken = ptr(true) }, "container flux can read a token: automountServiceAccountToken"},
		{"automount unset", func(pod *corev1.PodSpec) { pod.AutomountServiceAccountToken = nil }, "container flux can read a token: automountServiceAccountToken"},
		{"sidecar mounts the manager's token", func(pod *corev1.PodSpec) {
			c := sidecar(pod)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "manager-token", MountPath: "/x"})
		}, "container flux can read a token: volume manager-token"},
		{"sidecar with its own projected token", func(pod *corev1.PodSpec) {
			pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t", Audience: "vault"}}}}}})
			c := sidecar(pod)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "tok", MountPath: "/t"})
		}, "container flux can read a token: volume tok"},
		{"sidecar mounts a token secret", func(pod *corev1.PodSpec) {
			pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sa"}}})
			c := sidecar(pod)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "s", MountPath: "/s"})
		}, "container flux can read a token: volume s"},
		{"sidecar mounts an unknown secret", func(pod *corev1.PodSpec) {
			pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "elsewhere"}}})
			c := sidecar(pod)
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "s", MountPath: "/s"})
		}, "container flux can read a token: volume s"},
		{"sidecar env from a token secret", func(pod *corev1.PodSpec) {
			c := sidecar(pod)
			c.Env = append(c.Env, corev1.EnvVar{Name: "T", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "sa"}, Key: "token"}}})
		}, "container flux can read a token: env T"},
		{"sidecar envFrom a token secret", func(pod *corev1.PodSpec) {
			c := sidecar(pod)
			c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sa"}}})
		}, "container flux can read a token: envFrom secret sa"},
		{"manager without the token", func(pod *corev1.PodSpec) {
			for i := range pod.Containers {
				pod.Containers[i].VolumeMounts = slices.DeleteFunc(pod.Containers[i].VolumeMounts,
					func(m corev1.VolumeMount) bool { return m.MountPath == saTokenDir })
			}
		}, "the manager has no volume mounted at"},
		{"manager's volume without the CA", func(pod *corev1.PodSpec) {
			for i := range pod.Volumes {
				if p := pod.Volumes[i].Projected; p != nil {
					p.Sources = slices.DeleteFunc(p.Sources, func(s corev1.VolumeProjection) bool { return s.ConfigMap != nil })
				}
			}
		}, "the manager's projected volume lacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := dep.DeepCopy().Spec.Template.Spec
			tc.mutate(&pod)
			problems := tokenProblems(&pod, secrets)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q lack %q", problems, tc.want)
			}
		})
	}
	// A plain secret the manifests render is not a token.
	pod := dep.DeepCopy().Spec.Template.Spec
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "p", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "plain"}}})
	c := sidecar(&pod)
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "p", MountPath: "/p"})
	if p := tokenProblems(&pod, secrets); len(p) != 0 {
		t.Errorf("an Opaque secret counted as a token: %v", p)
	}
}

func ptr[T any](v T) *T { return &v }

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestNoTokenPathInSidecar checks that no container but the manager even
// mounts something at the service-account directory, where client libraries
// in a job would look for credentials.
func TestNoTokenPathInSidecar(t *testing.T) {
	dep, _ := renderDeployment(t)
	for name, pc := range containers(t, &dep.Spec.Template.Spec) {
		if name == managerName {
			continue
		}
		for _, m := range pc.c.VolumeMounts {
			if mp := filepath.Clean(m.MountPath); mp == saTokenDir || strings.HasPrefix(mp, saTokenDir+"/") {
				t.Errorf("container %s mounts %s at %s, over or inside %s", name, m.Name, m.MountPath, saTokenDir)
			}
		}
	}
}
