package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNotRoot is returned by StartNode when the test does not run as root:
// a node needs a network namespace, mounts and cgroups.
var ErrNotRoot = errors.New("the real-node e2e needs root (network namespace, mounts, cgroups)")

// NodeMissing says which program or file a real node (hack/node.sh) needs
// and this machine lacks, or "" when nothing is missing. It does not build
// anything: the Kubernetes binaries are built by StartNode when missing.
func NodeMissing() string {
	if os.Geteuid() != 0 {
		return ErrNotRoot.Error()
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "ip", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not on PATH (.ci/run installs containerd, runc and containernetworking-plugins with apt-get)"
		}
	}
	cni := os.Getenv("CNI_BIN_DIR")
	if cni == "" {
		cni = "/usr/lib/cni"
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cni, p)); err != nil {
			return "the CNI plugin " + p + " is not in " + cni + " (apt-get install containernetworking-plugins)"
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpuset/cpuset.cpus"); err != nil {
		return "no cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset (hack/node.sh knows cgroup v1 only)"
	}
	return ""
}

// Node is a one-node Kubernetes cluster with a real kubelet, containerd and
// runc, run by hack/node.sh inside a network namespace of its own.
type Node struct {
	// Dir holds everything the node writes (certificates, etcd, containerd,
	// the kubelet's root, logs).
	Dir string
	// NetNS is the name of the node's network namespace.
	NetNS string
	// Started is how long `hack/node.sh up` took (to a Ready node).
	Started time.Duration

	script string
	before Footprint
}

// StartNode runs `hack/node.sh up` in a new directory under parent (which
// should be short: containerd's socket lives there) and returns once the
// node is Ready. logw, if not nil, gets the script's progress.
func StartNode(ctx context.Context, parent string, logw io.Writer) (*Node, error) {
	if why := NodeMissing(); why != "" {
		return nil, errors.New(why)
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, "fjn-")
	if err != nil {
		return nil, fmt.Errorf("creating the node directory: %w", err)
	}
	n := &Node{Dir: dir, script: filepath.Join(root, "hack", "node.sh")}
	sum := sha256.Sum256([]byte(dir))
	n.NetNS = "fjn-" + hex.EncodeToString(sum[:])[:10]
	n.before = TakeFootprint(dir, n.NetNS)
	start := time.Now()
	out, err := n.run(ctx, nil, logw, "up", dir)
	n.Started = time.Since(start)
	if err != nil {
		// up tears down what it started when it fails; the directory is
		// ours to remove.
		return nil, errors.Join(fmt.Errorf("starting the node: %w\n%s", err, out), removeAll(dir))
	}
	return n, nil
}

// run runs hack/node.sh with args and returns its standard output; its
// standard error goes to logw and, on failure, into the error.
func (n *Node) run(ctx context.Context, stdin io.Reader, logw io.Writer, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{n.script}, args...)...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if logw != nil {
		cmd.Stderr = io.MultiWriter(&stderr, logw)
	}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("hack/node.sh %s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kubectl runs kubectl as cluster admin inside the node's network namespace
// and returns its standard output.
func (n *Node) Kubectl(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	return n.run(ctx, stdin, nil, append([]string{"kubectl", n.Dir}, args...)...)
}

// Exec runs a program inside the node's network namespace (the kubectl
// plugin, for one) with extra environment and returns its standard output.
// stdout, if not nil, receives the output as it comes instead.
func (n *Node) Exec(ctx context.Context, env []string, stdout io.Writer, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{n.script, "exec", n.Dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 20))
	}
	return out.Bytes(), nil
}

// Kubeconfig is the cluster admin's kubeconfig (valid inside the network
// namespace only).
func (n *Node) Kubeconfig() string { return filepath.Join(n.Dir, "pki", "admin.kubeconfig") }

// Import imports image tarballs (`docker save` layout) into containerd.
func (n *Node) Import(ctx context.Context, tarballs ...string) error {
	_, err := n.run(ctx, nil, nil, append([]string{"import", n.Dir}, tarballs...)...)
	return err
}

// Log returns the last lines of a component's log (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet).
func (n *Node) Log(component string, lines int) string {
	b, err := os.ReadFile(filepath.Join(n.Dir, "logs", component+".log"))
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), lines)
}

// Stop runs `hack/node.sh down`, which stops every process of the node and
// removes what it left outside Dir; then it removes Dir. It returns what is
// still left behind, compared with before StartNode (see Footprint.Diff).
func (n *Node) Stop(ctx context.Context) (leftovers []string, err error) {
	_, err = n.run(ctx, nil, nil, "down", n.Dir)
	if rerr := removeAll(n.Dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	after := TakeFootprint(n.Dir, n.NetNS)
	return n.before.Diff(after, n.Dir), err
}

// removeAll removes dir, first making every directory in it writable (the
// pods write files as their own uid, read-only).
func removeAll(dir string) error {
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the node directory: %w", err)
	}
	return nil
}

// Footprint is what a node can leave on the machine outside its directory:
// processes, mounts, network namespaces, cgroups and files in the places
// the kubelet and containerd write to regardless of their configuration.
type Footprint struct {
	// Processes are "PID command line" of the node's running processes.
	Processes map[string]bool
	// Mounts are the mount points of this mount namespace that a node
	// could leave (nodeMount).
	Mounts map[string]bool
	// NetNS are the named network namespaces (/run/netns).
	NetNS map[string]bool
	// Cgroups are the cgroup directories named after the node (any
	// hierarchy).
	Cgroups map[string]bool
	// Paths are the fixed places that exist.
	Paths map[string]bool
}

// fixedPaths are where the kubelet and containerd write whatever their
// configuration says.
var fixedPaths = []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni", "/etc/cni"}

// TakeFootprint records the machine's state as Footprint sees it: dir is
// the node's directory, netns the name of its network namespace and cgroup
// root. Only processes that belong to the node count (their command line
// names dir or netns, or their cgroup is under the node's cgroup root):
// other people's kubelets or etcds on the same machine are none of its
// business.
func TakeFootprint(dir, netns string) Footprint {
	f := Footprint{Processes: map[string]bool{}, Mounts: map[string]bool{}, NetNS: map[string]bool{}, Cgroups: map[string]bool{}, Paths: map[string]bool{}}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		cg, _ := os.ReadFile(filepath.Join(p, "cgroup"))
		if strings.Contains(cmdline, dir) || strings.Contains(cmdline, netns) || strings.Contains(string(cg), "/"+netns) {
			f.Processes[filepath.Base(p)+" "+cmdline] = true
		}
	}
	if mi, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(mi)
		s.Buffer(make([]byte, 64*1024), 1024*1024)
		for s.Scan() {
			if fields := strings.Fields(s.Text()); len(fields) > 4 && nodeMount(fields[4], dir, netns) {
				f.Mounts[fields[4]] = true
			}
		}
		_ = mi.Close()
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			f.NetNS[e.Name()] = true
		}
	}
	if hier, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, h := range hier {
			p := filepath.Join("/sys/fs/cgroup", h.Name(), netns)
			if _, err := os.Stat(p); err == nil {
				f.Cgroups[p] = true
			}
		}
	}
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil {
			f.Paths[p] = true
		}
	}
	return f
}

// nodeMount reports whether a mount point is one a node could leave: under
// its directory, in the places the kubelet, containerd and ip-netns mount
// things, or naming the node. Other mounts (another program's, made while
// the node ran) are none of its business.
func nodeMount(point, dir, netns string) bool {
	if strings.HasPrefix(point, dir) || strings.Contains(point, netns) {
		return true
	}
	for _, p := range []string{"/run/netns", "/var/run/netns", "/run/containerd", "/var/lib/kubelet", "/var/lib/containerd", "/run/flux"} {
		if point == p || strings.HasPrefix(point, p+"/") {
			return true
		}
	}
	return false
}

// Diff lists what after has and f had not: every process, mount, network
// namespace, cgroup or fixed path the node left behind, plus anything at all
// that still names dir.
func (f Footprint) Diff(after Footprint, dir string) []string {
	var out []string
	add := func(kind string, before, now map[string]bool) {
		for k := range now {
			if !before[k] || strings.Contains(k, dir) {
				out = append(out, kind+" "+k)
			}
		}
	}
	add("process", f.Processes, after.Processes)
	add("mount", f.Mounts, after.Mounts)
	add("netns", f.NetNS, after.NetNS)
	add("cgroup", f.Cgroups, after.Cgroups)
	add("path", f.Paths, after.Paths)
	if _, err := os.Lstat(dir); err == nil {
		out = append(out, "path "+dir)
	}
	return out
}
