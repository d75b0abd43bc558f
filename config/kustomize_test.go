package config

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fluxjob/fluxjob-operator/internal/brokerpod"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	wantNamespace  = "fluxjob-system"
	wantDeployment = "fluxjob-controller-manager"
	managerName    = "manager"
	sidecarName    = "flux"
)

// kubectlPath finds kubectl: $KUBECTL if set, else bin/k8s/kubectl in the
// repository (built by `make envtest`), else PATH. Without it the test is
// skipped locally and fails in CI.
func kubectlPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KUBECTL"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		t.Logf("KUBECTL=%s does not exist; looking elsewhere", p)
	}
	local, err := filepath.Abs(filepath.Join("..", "bin", "k8s", "kubectl"))
	if err == nil {
		if fi, statErr := os.Stat(local); statErr == nil && !fi.IsDir() {
			return local
		}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	const why = "kubectl not found in bin/k8s/kubectl or PATH: cannot render config/default"
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: this is a failure, not a skip)")
	}
	t.Skip(why)
	return ""
}

// object is one rendered manifest: its kind and name, and its YAML.
type object struct {
	Kind      string
	Name      string
	Namespace string
	raw       []byte
}

// render runs `kubectl kustomize <dir>` (dir relative to the repository root)
// and splits the output into objects.
func render(t *testing.T, dir string) []object {
	t.Helper()
	return renderPath(t, filepath.Join("..", dir))
}

// renderPath runs `kubectl kustomize path` and splits the output.
func renderPath(t *testing.T, dir string) []object {
	t.Helper()
	kubectl := kubectlPath(t)
	touchInputs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	var objs []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(&stdout))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split rendered YAML: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("parse rendered object: %v\n%s", err, doc)
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, raw: doc})
	}
	if len(objs) == 0 {
		t.Fatalf("kubectl kustomize %s rendered nothing", dir)
	}
	return objs
}

// touchInputs reads every file under config/ so that `go test` caching sees
// them: kubectl reads them in another process, which the cache cannot track,
// and a changed manifest must not return a cached pass.
func touchInputs(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(path, ".go") {
			return nil
		}
		_, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatalf("read config/: %v", err)
	}
}

// find returns the one object of kind and name, failing the test otherwise.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in the rendered manifests, found %d", kind, name, len(found))
	}
	return found[0]
}

func decode[T any](t *testing.T, o object) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
		t.Fatalf("decode %s %q: %v", o.Kind, o.Name, err)
	}
	return v
}

func renderDeployment(t *testing.T) (*appsv1.Deployment, []object) {
	t.Helper()
	objs := render(t, filepath.Join("config", "default"))
	return decode[appsv1.Deployment](t, find(t, objs, "Deployment", wantDeployment)), objs
}

// podContainer is a container of the pod with the security settings it
// effectively runs with (container settings over pod settings).
type podContainer struct {
	c         corev1.Container
	isSidecar bool // an init container with restartPolicy Always
}

func containers(t *testing.T, pod *corev1.PodSpec) map[string]podContainer {
	t.Helper()
	out := map[string]podContainer{}
	for _, c := range pod.InitContainers {
		out[c.Name] = podContainer{c: c, isSidecar: c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways}
	}
	for _, c := range pod.Containers {
		if _, dup := out[c.Name]; dup {
			t.Fatalf("container name %q used twice", c.Name)
		}
		out[c.Name] = podContainer{c: c}
	}
	return out
}

func effectiveUID(pod *corev1.PodSpec, c *corev1.Container) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return c.SecurityContext.RunAsUser
	}
	if pod.SecurityContext != nil {
		return pod.SecurityContext.RunAsUser
	}
	return nil
}

func effectiveGID(pod *corev1.PodSpec, c *corev1.Container) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsGroup != nil {
		return c.SecurityContext.RunAsGroup
	}
	if pod.SecurityContext != nil {
		return pod.SecurityContext.RunAsGroup
	}
	return nil
}

func effectiveNonRoot(pod *corev1.PodSpec, c *corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	return pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
}

func effectiveSeccomp(pod *corev1.PodSpec, c *corev1.Container) *corev1.SeccompProfile {
	if c.SecurityContext != nil && c.SecurityContext.SeccompProfile != nil {
		return c.SecurityContext.SeccompProfile
	}
	if pod.SecurityContext != nil {
		return pod.SecurityContext.SeccompProfile
	}
	return nil
}

// TestContainersAreLockedDown checks every container of the manager pod
// against the "restricted" Pod Security Standard and this project's rules.
func TestContainersAreLockedDown(t *testing.T) {
	dep, _ := renderDeployment(t)
	pod := &dep.Spec.Template.Spec
	all := containers(t, pod)
	for _, name := range []string{managerName, sidecarName} {
		if _, ok := all[name]; !ok {
			t.Fatalf("the pod has no container %q (has %v)", name, keys(all))
		}
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("the pod shares a host namespace (network %v, pid %v, ipc %v)", pod.HostNetwork, pod.HostPID, pod.HostIPC)
	}
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		t.Error("shareProcessNamespace lets the containers see each other's processes")
	}
	for name, pc := range all {
		t.Run(name, func(t *testing.T) {
			c := pc.c
			sc := c.SecurityContext
			if sc == nil {
				t.Fatal("no securityContext")
			}
			if !effectiveNonRoot(pod, &c) {
				t.Error("runAsNonRoot is not true")
			}
			if uid := effectiveUID(pod, &c); uid == nil || *uid == 0 {
				t.Errorf("runAsUser = %v, want a fixed non-zero uid", uid)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Error("privileged")
			}
			if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("capabilities.drop = %v, want [ALL]", sc.Capabilities)
			}
			if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
				t.Errorf("capabilities.add = %v, want none", sc.Capabilities.Add)
			}
			if sp := effectiveSeccomp(pod, &c); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccompProfile = %v, want RuntimeDefault", sp)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					t.Errorf("no %s request", res)
				}
				if _, ok := c.Resources.Limits[res]; !ok {
					t.Errorf("no %s limit", res)
				}
			}
			if c.ReadinessProbe == nil {
				t.Error("no readinessProbe")
			}
			if c.LivenessProbe == nil {
				t.Error("no livenessProbe")
			}
		})
	}
}

// TestFluxSidecarSharesSocketWithManager checks what makes the manager able
// to submit as the Flux instance owner: the sidecar is a native sidecar that
// starts first, both containers run as the same uid and gid (connector-local
// grants the owner role only to the broker's own uid), the socket directory
// is an emptyDir mounted in both, and FLUX_URI names the socket the broker
// is told to create (-Slocal-uri) inside that mount.
func TestFluxSidecarSharesSocketWithManager(t *testing.T) {
	dep, _ := renderDeployment(t)
	pod := &dep.Spec.Template.Spec
	all := containers(t, pod)
	mgr, flux := all[managerName], all[sidecarName]

	if !flux.isSidecar {
		t.Errorf("%q must be an init container with restartPolicy: Always (native sidecar)", sidecarName)
	}
	if flux.c.StartupProbe == nil {
		t.Errorf("%q has no startupProbe: the manager would start before the broker is up", sidecarName)
	}
	if mgr.isSidecar {
		t.Errorf("%q must be a regular container", managerName)
	}

	mu, fu := effectiveUID(pod, &mgr.c), effectiveUID(pod, &flux.c)
	if mu == nil || fu == nil || *mu != *fu {
		t.Errorf("runAsUser differs: manager %v, flux %v; the broker grants the owner role only to its own uid", deref(mu), deref(fu))
	}
	mg, fg := effectiveGID(pod, &mgr.c), effectiveGID(pod, &flux.c)
	if mg == nil || fg == nil || *mg != *fg {
		t.Errorf("runAsGroup differs: manager %v, flux %v", deref(mg), deref(fg))
	}
	if pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil {
		t.Error("no pod fsGroup: the emptyDirs would not be group-owned by the containers' group")
	} else if fg != nil && *pod.SecurityContext.FSGroup != *fg {
		t.Errorf("fsGroup %d differs from the containers' gid %d", *pod.SecurityContext.FSGroup, *fg)
	}

	uri := envValue(mgr.c, "FLUX_URI")
	sock, ok := strings.CutPrefix(uri, "local://")
	if !ok || !filepath.IsAbs(sock) {
		t.Fatalf("manager FLUX_URI = %q, want local:///<absolute socket path>", uri)
	}
	// Linux sun_path holds 107 bytes plus the NUL (flux-core checks the same
	// in src/broker/broker.c init_local_uri_attr).
	if len(sock) > 107 {
		t.Errorf("socket path %q is longer than a unix socket path may be", sock)
	}
	if got := brokerAttr(flux.c, "local-uri"); got != uri {
		t.Errorf("the broker's -Slocal-uri is %q, want the manager's FLUX_URI %q", got, uri)
	}
	if v := envValue(flux.c, "FLUX_URI"); v != "" && v != uri {
		t.Errorf("the sidecar's FLUX_URI (used by its probes) = %q, want %q", v, uri)
	}

	mgrVol, mgrMount := mountFor(mgr.c, sock)
	if mgrVol == "" {
		t.Fatalf("no volume of the manager contains the socket %s (mounts %v)", sock, mgr.c.VolumeMounts)
	}
	fluxVol, fluxMount := mountFor(flux.c, sock)
	if fluxVol != mgrVol {
		t.Fatalf("the socket %s is in volume %q for the manager but %q for the sidecar", sock, mgrVol, fluxVol)
	}
	if mgrMount != fluxMount {
		t.Errorf("volume %q is mounted at %s in the manager but %s in the sidecar", mgrVol, mgrMount, fluxMount)
	}
	vol := volume(pod, mgrVol)
	if vol == nil || vol.EmptyDir == nil {
		t.Fatalf("the socket volume %q is not an emptyDir", mgrVol)
	}
	// An emptyDir mount point is owned by root; the broker refuses a socket
	// directory not owned by its own uid (src/broker/rundir.c
	// rundir_checkdir), so the socket must be in a subdirectory the broker
	// creates itself: its rundir.
	if filepath.Dir(sock) == filepath.Clean(mgrMount) {
		t.Errorf("the socket %s is directly in the emptyDir mount %s, which the broker rejects as not owned by the instance owner", sock, mgrMount)
	}
	rundir := brokerAttr(flux.c, "rundir")
	if rundir == "" || filepath.Dir(sock) != filepath.Clean(rundir) {
		t.Errorf("the broker's -Srundir is %q, want the socket's directory %s", rundir, filepath.Dir(sock))
	}
	for _, m := range mgr.c.VolumeMounts {
		if m.Name == mgrVol && m.ReadOnly {
			t.Errorf("the manager mounts the socket volume read-only; connect(2) on a unix socket needs write permission")
		}
	}
}

// TestFluxSidecarHasWritableDirs checks that, with a read-only root
// filesystem, the broker still has the writable places it needs: /tmp (its
// TMPDIR default, and the jobs') and the statedir.
func TestFluxSidecarHasWritableDirs(t *testing.T) {
	dep, _ := renderDeployment(t)
	pod := &dep.Spec.Template.Spec
	flux := containers(t, pod)[sidecarName].c
	statedir := brokerAttr(flux, "statedir")
	if statedir == "" {
		t.Fatal("the broker has no -Sstatedir: it would fall back to $TMPDIR")
	}
	for _, p := range []string{"/tmp/x", filepath.Join(statedir, "x")} {
		vol, _ := mountFor(flux, p)
		if vol == "" {
			t.Errorf("%s is on the read-only root filesystem", filepath.Dir(p))
			continue
		}
		if v := volume(pod, vol); v == nil || v.EmptyDir == nil {
			t.Errorf("%s is on volume %q, want an emptyDir", filepath.Dir(p), vol)
		}
	}
	image := flux.Image
	if i := strings.LastIndex(image, ":"); i < 0 || strings.Contains(image[i:], "/") || image[i+1:] == "latest" {
		t.Errorf("flux image %q is not pinned to a version tag", image)
	}
	if len(flux.Command) == 0 {
		t.Error("the sidecar does not set command: the image's ENTRYPOINT (sudo munged) would run")
	}
}

// TestDefaultWiring checks the namespace, name prefix, service account and
// RBAC bindings of config/default.
func TestDefaultWiring(t *testing.T) {
	dep, objs := renderDeployment(t)
	find(t, objs, "Namespace", wantNamespace)
	find(t, objs, "CustomResourceDefinition", "fluxjobs.fluxjob.io")
	if dep.Namespace != wantNamespace {
		t.Errorf("Deployment namespace = %q, want %q", dep.Namespace, wantNamespace)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1: each pod has its own Flux instance", dep.Spec.Replicas)
	}
	if dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %q, want Recreate so two Flux instances never run at once", dep.Spec.Strategy.Type)
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	find(t, objs, "ServiceAccount", sa)
	for _, o := range objs {
		if o.Kind == "Namespace" || o.Kind == "CustomResourceDefinition" {
			continue
		}
		if !strings.HasPrefix(o.Name, "fluxjob-") {
			t.Errorf("%s %q lacks the fluxjob- name prefix", o.Kind, o.Name)
		}
		isClusterScoped := o.Kind == "ClusterRole" || o.Kind == "ClusterRoleBinding" ||
			o.Kind == "ValidatingAdmissionPolicy" || o.Kind == "ValidatingAdmissionPolicyBinding"
		if !isClusterScoped && o.Namespace != wantNamespace {
			t.Errorf("%s %q is in namespace %q, want %q", o.Kind, o.Name, o.Namespace, wantNamespace)
		}
	}
	// config/policy: only the manager's ServiceAccount, as rendered, may
	// change the submission marker, and the binding binds that policy.
	pol := find(t, objs, "ValidatingAdmissionPolicy", "fluxjob-submit-attempt")
	if user := "'system:serviceaccount:" + wantNamespace + ":" + sa + "'"; !strings.Contains(string(pol.raw), user) {
		t.Errorf("ValidatingAdmissionPolicy %s does not name the manager's ServiceAccount %s:\n%s", pol.Name, user, pol.raw)
	}
	if bind := find(t, objs, "ValidatingAdmissionPolicyBinding", "fluxjob-submit-attempt"); !strings.Contains(string(bind.raw), "policyName: "+pol.Name) {
		t.Errorf("ValidatingAdmissionPolicyBinding %s does not bind %s:\n%s", bind.Name, pol.Name, bind.raw)
	}
	for _, b := range []struct{ kind, name, roleKind, role string }{
		{"ClusterRoleBinding", "fluxjob-manager-rolebinding", "ClusterRole", "fluxjob-manager-role"},
		{"RoleBinding", "fluxjob-leader-election-rolebinding", "Role", "fluxjob-leader-election-role"},
		{"RoleBinding", "fluxjob-manager-rolebinding", "Role", "fluxjob-manager-role"},
	} {
		rb := decode[rbacv1.RoleBinding](t, find(t, objs, b.kind, b.name))
		if rb.RoleRef.Kind != b.roleKind || rb.RoleRef.Name != b.role {
			t.Errorf("%s %s refers to %s %s, want %s %s", b.kind, b.name, rb.RoleRef.Kind, rb.RoleRef.Name, b.roleKind, b.role)
		}
		find(t, objs, b.roleKind, b.role)
		if len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != wantNamespace {
			t.Errorf("%s %s subjects = %+v, want the ServiceAccount %s/%s", b.kind, b.name, rb.Subjects, wantNamespace, sa)
		}
	}
	// Least privilege: no wildcards; Secrets only read (get, no list or
	// watch) through a Role in the manager's own namespace (the ssh keys
	// of ssh:// FluxEndpoints), never through a ClusterRole.
	for _, o := range objs {
		if o.Kind != "ClusterRole" && o.Kind != "Role" {
			continue
		}
		role := decode[rbacv1.ClusterRole](t, o)
		for _, r := range role.Rules {
			for _, list := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
				for _, s := range list {
					if s == "*" {
						t.Errorf("%s %s has a wildcard rule %+v", o.Kind, o.Name, r)
					}
				}
			}
			for _, res := range r.Resources {
				if res == "secrets" && (o.Kind != "Role" || o.Namespace != wantNamespace || !slices.Equal(r.Verbs, []string{"get"})) {
					t.Errorf("%s %s grants %v on secrets; want only get, in a Role in %s", o.Kind, o.Name, r.Verbs, wantNamespace)
				}
			}
		}
	}
}

func keys(m map[string]podContainer) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// brokerAttr returns the value of -S<attr>=<value> (or --setattr) among the
// sidecar's command and args, "" if absent.
func brokerAttr(c corev1.Container, attr string) string {
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		for _, p := range []string{"-S", "--setattr=", "--setattr "} {
			if v, ok := strings.CutPrefix(a, p+attr+"="); ok {
				return v
			}
		}
	}
	return ""
}

// mountFor returns the volume and mount path under which path lies in c
// (the deepest mount wins), or "" if it is on the root filesystem.
func mountFor(c corev1.Container, path string) (vol, mountPath string) {
	for _, m := range c.VolumeMounts {
		mp := filepath.Clean(m.MountPath)
		if (path == mp || strings.HasPrefix(path, mp+"/")) && len(mp) > len(mountPath) {
			vol, mountPath = m.Name, mp
		}
	}
	return vol, mountPath
}

func volume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// TestDefaultServesOneNamespace checks that config/default restricts the
// manager to the namespaces of manager_namespaces_patch.yaml (watch and
// allow the same list), grants no privileged namespace, and that the flags
// reach the manager container only.
func TestDefaultServesOneNamespace(t *testing.T) {
	dep, _ := renderDeployment(t)
	all := containers(t, &dep.Spec.Template.Spec)
	args := all[managerName].c.Args
	flag := func(name string) (string, bool) {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	watch, okW := flag("watch-namespaces")
	allowed, okA := flag("allowed-namespaces")
	if !okW || !okA || watch == "" {
		t.Fatalf("manager args %q lack a non-empty --watch-namespaces and --allowed-namespaces", args)
	}
	if watch != allowed {
		t.Errorf("--watch-namespaces=%s but --allowed-namespaces=%s: the default should watch only what it allows", watch, allowed)
	}
	if p, ok := flag("privileged-namespaces"); ok && p != "" {
		t.Errorf("the default install grants the owner's powers to %q", p)
	}
	if !slices.Contains(args, "--leader-elect") {
		t.Errorf("manager args %q lack --leader-elect", args)
	}
	if fluxArgs := strings.Join(all[sidecarName].c.Args, " "); strings.Contains(fluxArgs, "namespaces") {
		t.Errorf("the patch reached the flux sidecar: %q", fluxArgs)
	}
}

// TestDefaultHasNoPodAccess: the default install grants the manager no
// access to pods at all (no pods, no pods/exec, no owners of broker pods):
// miniCluster and pod FluxEndpoints are opt-in (config/pod-exec).
func TestDefaultHasNoPodAccess(t *testing.T) {
	for _, o := range render(t, filepath.Join("config", "default")) {
		if o.Kind != "ClusterRole" && o.Kind != "Role" {
			continue
		}
		if o.Name == "fluxjob-fluxjob-viewer-role" || o.Name == "fluxjob-fluxjob-editor-role" || o.Name == "fluxjob-fluxendpoint-viewer-role" {
			continue
		}
		for _, r := range decode[rbacv1.ClusterRole](t, o).Rules {
			for _, res := range r.Resources {
				if res == "pods" || strings.HasPrefix(res, "pods/") || res == "miniclusters" || res == "jobs" || res == "statefulsets" {
					t.Errorf("config/default: %s %s grants %v on %s; pod access belongs in config/components/pod-exec", o.Kind, o.Name, r.Verbs, res)
				}
			}
		}
	}
}

// TestPodExecComponent: config/pod-exec (config/default with
// config/components/pod-exec) grants the manager's ServiceAccount exactly
// internal/brokerpod.Rules, through RoleBindings in the namespaces of
// --exec-namespaces and nowhere else (no ClusterRoleBinding to the role),
// and the flag reaches the manager container only.
func TestPodExecComponent(t *testing.T) {
	objs := render(t, filepath.Join("config", "pod-exec"))
	dep := decode[appsv1.Deployment](t, find(t, objs, "Deployment", wantDeployment))
	all := containers(t, &dep.Spec.Template.Spec)
	var execNS []string
	for _, a := range all[managerName].c.Args {
		if v, ok := strings.CutPrefix(a, "--exec-namespaces="); ok {
			execNS = strings.Split(v, ",")
		}
	}
	if len(execNS) == 0 {
		t.Fatalf("manager args %q lack --exec-namespaces", all[managerName].c.Args)
	}
	if strings.Contains(strings.Join(all[sidecarName].c.Args, " "), "exec-namespaces") {
		t.Errorf("--exec-namespaces reached the flux sidecar")
	}
	role := decode[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "fluxjob-pod-exec"))
	if !reflect.DeepEqual(role.Rules, brokerpod.Rules) {
		t.Errorf("ClusterRole fluxjob-pod-exec rules\n%+v\nwant internal/brokerpod.Rules\n%+v", role.Rules, brokerpod.Rules)
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	var bound []string
	for _, o := range objs {
		if o.Kind != "RoleBinding" && o.Kind != "ClusterRoleBinding" {
			continue
		}
		rb := decode[rbacv1.RoleBinding](t, o)
		if rb.RoleRef.Name != role.Name {
			continue
		}
		if o.Kind == "ClusterRoleBinding" {
			t.Errorf("ClusterRoleBinding %s binds %s cluster-wide", o.Name, role.Name)
			continue
		}
		if len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != wantNamespace {
			t.Errorf("RoleBinding %s/%s subjects %+v, want the ServiceAccount %s/%s", o.Namespace, o.Name, rb.Subjects, wantNamespace, sa)
		}
		bound = append(bound, o.Namespace)
	}
	slices.Sort(bound)
	want := slices.Clone(execNS)
	slices.Sort(want)
	if !slices.Equal(bound, want) {
		t.Errorf("the pod-exec role is bound in namespaces %q but --exec-namespaces lists %q: edit rolebindings.yaml and exec_namespaces_patch.yaml together", bound, want)
	}
	// Nothing else of the manager gains pod access.
	for _, o := range objs {
		if (o.Kind == "ClusterRole" || o.Kind == "Role") && o.Name != role.Name {
			for _, r := range decode[rbacv1.ClusterRole](t, o).Rules {
				if slices.Contains(r.Resources, "pods/exec") {
					t.Errorf("%s %s grants pods/exec too", o.Kind, o.Name)
				}
			}
		}
	}
}

// TestPodExecNamespacesScript: hack/pod-exec-namespaces.sh writes the
// committed component files from their list (so the committed files are
// its output), and for a list of two namespaces writes two RoleBindings
// and the flag with both; a malformed name is refused.
func TestPodExecNamespacesScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	run := func(out, list string) error {
		cmd := exec.Command(bash, filepath.Join("..", "hack", "pod-exec-namespaces.sh"), list)
		cmd.Env = append(os.Environ(), "OUT="+out)
		b, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, b)
		}
		return nil
	}
	committed := filepath.Join("components", "pod-exec")
	patch, err := os.ReadFile(filepath.Join(committed, "exec_namespaces_patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(patch), "--exec-namespaces=")
	if !ok {
		t.Fatal("exec_namespaces_patch.yaml has no --exec-namespaces")
	}
	list = strings.TrimSpace(list)
	tmp := t.TempDir()
	if err := run(tmp, list); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"rolebindings.yaml", "exec_namespaces_patch.yaml"} {
		want, _ := os.ReadFile(filepath.Join(committed, f))
		got, _ := os.ReadFile(filepath.Join(tmp, f))
		if !bytes.Equal(want, got) {
			t.Errorf("config/components/pod-exec/%s is not what hack/pod-exec-namespaces.sh %s writes:\n%s", f, list, got)
		}
	}
	if err := run(tmp, "team-a, team-b"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(tmp, "rolebindings.yaml"))
	var nss []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var rb rbacv1.RoleBinding
		if err := yaml.UnmarshalStrict(doc, &rb); err != nil {
			t.Fatal(err)
		}
		nss = append(nss, rb.Namespace)
	}
	if !slices.Equal(nss, []string{"team-a", "team-b"}) {
		t.Errorf("RoleBindings in %q, want team-a, team-b", nss)
	}
	if p, _ := os.ReadFile(filepath.Join(tmp, "exec_namespaces_patch.yaml")); !strings.Contains(string(p), "--exec-namespaces=team-a,team-b\n") {
		t.Errorf("patch:\n%s", p)
	}
	if err := run(tmp, "Bad_Name"); err == nil {
		t.Error("a malformed namespace name was accepted")
	}
}
