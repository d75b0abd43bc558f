package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// readTar returns the regular files of a tarball by name, and every header.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

// TestWriteDockerSave writes an image and reads it back as containerd's
// importer does: manifest.json names the config and the layer, the config's
// diff ID is the layer's digest, and the layer holds the files, directories
// and links asked for, with their modes and parents.
func TestWriteDockerSave(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	spec := Spec{
		Tag:        "fluxjob.local/test:e2e",
		Files:      map[string]string{"/usr/bin/prog": bin},
		Dirs:       map[string]os.FileMode{"/tmp": 0o777 | os.ModeSticky},
		Symlinks:   map[string]string{"/bin/sh": "/usr/bin/prog"},
		Entrypoint: []string{"/usr/bin/prog"},
		User:       "65532:65532",
		WorkingDir: "/tmp",
	}
	if err := Write(out, spec); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _ := readTar(t, f)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != spec.Tag {
		t.Fatalf("manifest %+v", manifest)
	}
	cb := files[manifest[0].Config]
	if sum := sha256.Sum256(cb); hex.EncodeToString(sum[:])+".json" != manifest[0].Config {
		t.Errorf("config file %s is not named by its digest", manifest[0].Config)
	}
	var config struct {
		Config struct {
			Entrypoint []string
			User       string
			WorkingDir string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cb, &config); err != nil {
		t.Fatal(err)
	}
	layer := files[manifest[0].Layers[0]]
	sum := sha256.Sum256(layer)
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff IDs %v, layer digest sha256:%x", config.RootFS.DiffIDs, sum)
	}
	if config.Config.User != "65532:65532" || config.Config.WorkingDir != "/tmp" || len(config.Config.Entrypoint) != 1 {
		t.Errorf("image config %+v", config.Config)
	}
	lfiles, lhdrs := readTar(t, bytes.NewReader(layer))
	if string(lfiles["usr/bin/prog"]) != "#!/bin/true\n" || lhdrs["usr/bin/prog"].Mode != 0o755 {
		t.Errorf("usr/bin/prog: %q mode %o", lfiles["usr/bin/prog"], lhdrs["usr/bin/prog"].Mode)
	}
	for _, d := range []string{"usr/", "usr/bin/", "bin/"} {
		if h := lhdrs[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("parent directory %s missing", d)
		}
	}
	if h := lhdrs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/: %+v, want mode 1777", h)
	}
	if h := lhdrs["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/usr/bin/prog" {
		t.Errorf("bin/sh: %+v", h)
	}

	// Reproducible: the same spec gives the same bytes.
	out2 := filepath.Join(dir, "img2.tar")
	if err := Write(out2, spec); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two writes of the same image differ")
	}
}

// TestWriteTrees adds directory trees at / and at a path: every file, link
// and directory arrives at its place with its mode, parents included.
func TestWriteTrees(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	prefix := filepath.Join(dir, "prefix")
	for _, d := range []string{filepath.Join(rootfs, "etc"), filepath.Join(prefix, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "os-release"), []byte("ID=debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prefix, "bin", "flux"), []byte("ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("flux", filepath.Join(prefix, "bin", "flux-alias")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	err := Write(out, Spec{Tag: "fluxjob.local/tree:e2e", Rootfs: rootfs, Trees: map[string]string{"/opt/flux": prefix},
		Env: []string{"PATH=/opt/flux/bin:/usr/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _ := readTar(t, f)
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v %+v", err, manifest)
	}
	var config struct {
		Config struct{ Env []string } `json:"config"`
	}
	if err := json.Unmarshal(files[manifest[0].Config], &config); err != nil {
		t.Fatal(err)
	}
	if len(config.Config.Env) != 1 || config.Config.Env[0] != "PATH=/opt/flux/bin:/usr/bin" {
		t.Errorf("env %q: want the given PATH only", config.Config.Env)
	}
	lfiles, lhdrs := readTar(t, bytes.NewReader(files[manifest[0].Layers[0]]))
	if string(lfiles["etc/os-release"]) != "ID=debian\n" {
		t.Errorf("etc/os-release: %q", lfiles["etc/os-release"])
	}
	if string(lfiles["opt/flux/bin/flux"]) != "ELF" || lhdrs["opt/flux/bin/flux"].Mode&0o777 != 0o755 {
		t.Errorf("opt/flux/bin/flux: %q %+v", lfiles["opt/flux/bin/flux"], lhdrs["opt/flux/bin/flux"])
	}
	if h := lhdrs["opt/flux/bin/flux-alias"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "flux" {
		t.Errorf("opt/flux/bin/flux-alias: %+v", h)
	}
	for _, d := range []string{"opt/", "opt/flux/", "opt/flux/bin/", "etc/"} {
		if h := lhdrs[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("directory %s missing", d)
		}
	}
}
