package v1alpha1_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("repo root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root %s has no go.mod: %v", root, err)
	}
	return root
}

// inCI reports whether the test runs in CI, where missing tools are failures, not skips.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireTool fails the test in CI and skips it elsewhere when a tool is missing.
func requireTool(t *testing.T, why string) {
	t.Helper()
	if inCI() {
		t.Fatal(why + " (CI=true: this is a failure, not a skip)")
	}
	t.Skip(why)
}

// controllerGen returns the path of controller-gen ($CONTROLLER_GEN, which the Makefile exports,
// else bin/controller-gen), or skips/fails when it is absent.
func controllerGen(t *testing.T, root string) string {
	t.Helper()
	p := os.Getenv("CONTROLLER_GEN")
	if p == "" {
		p = filepath.Join(root, "bin", "controller-gen")
	}
	if _, err := os.Stat(p); err != nil {
		requireTool(t, "bin/controller-gen is missing; install it with `make controller-gen` "+
			"(GOBIN=$PWD/bin go install sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0): "+err.Error())
	}
	return p
}

// runIn runs a command in dir with a timeout and fails the test with its output on error.
func runIn(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
}

// readDir returns the regular files of dir (not recursive) by name; a missing dir is empty.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return files
	}
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("read %s: %v", e.Name(), err)
		}
		files[e.Name()] = b
	}
	return files
}

// compareFiles reports every file that differs between the committed and the regenerated set.
func compareFiles(t *testing.T, what string, committed, generated map[string][]byte) {
	t.Helper()
	names := map[string]bool{}
	for n := range committed {
		names[n] = true
	}
	for n := range generated {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		c, inC := committed[n]
		g, inG := generated[n]
		switch {
		case !inC:
			t.Errorf("%s/%s is generated but not committed: run `make manifests`", what, n)
		case !inG:
			t.Errorf("%s/%s is committed but no longer generated: delete it and run `make manifests`", what, n)
		case !bytes.Equal(c, g):
			t.Errorf("%s/%s is stale: run `make manifests`", what, n)
		}
	}
}

// TestManifestsUpToDate regenerates the CRD and RBAC manifests with the Makefile's arguments
// into a temporary directory and fails when the committed ones differ.
func TestManifestsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerating manifests type-checks the whole module; skipped with -short")
	}
	root := repoRoot(t)
	gen := controllerGen(t, root)
	tmp := t.TempDir()
	// Same arguments as `make manifests`, with the output directories moved to tmp.
	runIn(t, root, gen, "rbac:roleName=manager-role", "crd", "paths=./...",
		"output:crd:artifacts:config="+filepath.Join(tmp, "crd"),
		"output:rbac:artifacts:config="+filepath.Join(tmp, "rbac"))

	compareFiles(t, "config/crd/bases", readDir(t, filepath.Join(root, "config", "crd", "bases")),
		readDir(t, filepath.Join(tmp, "crd")))
	compareFiles(t, "config/rbac", pick(readDir(t, filepath.Join(root, "config", "rbac")), "role.yaml"),
		readDir(t, filepath.Join(tmp, "rbac")))
}

// pick keeps only the named files of m.
func pick(m map[string][]byte, names ...string) map[string][]byte {
	out := map[string][]byte{}
	for _, n := range names {
		if b, ok := m[n]; ok {
			out[n] = b
		}
	}
	return out
}

// TestDeepCopyUpToDate regenerates zz_generated.deepcopy.go files (as `make generate` does) in a
// copy of the module's Go sources and fails when a committed one differs.
func TestDeepCopyUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerating deepcopy type-checks the whole module; skipped with -short")
	}
	root := repoRoot(t)
	gen := controllerGen(t, root)
	if _, err := os.Stat(filepath.Join(root, "hack", "boilerplate.go.txt")); err != nil {
		t.Fatalf("hack/boilerplate.go.txt (the header of generated files) is missing: %v", err)
	}
	tmp := t.TempDir()
	if err := copySources(root, tmp); err != nil {
		t.Fatalf("copy sources: %v", err)
	}
	runIn(t, tmp, gen, "object:headerFile=hack/boilerplate.go.txt", "paths=./...")

	committed, err := deepcopyFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	generated, err := deepcopyFiles(tmp)
	if err != nil {
		t.Fatal(err)
	}
	compareFiles(t, ".", committed, generated)
	if len(generated) == 0 {
		t.Error("controller-gen generated no zz_generated.deepcopy.go at all")
	}
}

// skipDir reports whether a directory holds no Go sources of the module (binaries, VCS, caches).
func skipDir(rel string, d fs.DirEntry) bool {
	name := d.Name()
	return rel != "." && (name == "bin" || name == ".git" || name == "testdata" ||
		name == "node_modules" || strings.HasPrefix(name, "."))
}

// copySources copies go.mod, go.sum, hack/boilerplate.go.txt and every .go file of the module
// (not the nested modules under hack/tools) from src to dst.
func copySources(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skipDir(rel, d) {
				return filepath.SkipDir
			}
			if rel != "." {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir // a nested module is not part of ./...
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if !strings.HasSuffix(rel, ".go") && rel != "go.mod" && rel != "go.sum" &&
			rel != filepath.Join("hack", "boilerplate.go.txt") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
}

// deepcopyFiles maps the module-relative path of every zz_generated.deepcopy.go under root to
// its content.
func deepcopyFiles(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skipDir(rel, d) {
				return filepath.SkipDir
			}
			if rel != "." {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if d.Name() != "zz_generated.deepcopy.go" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}
