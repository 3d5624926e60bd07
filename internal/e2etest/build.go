package e2etest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary
	path string // the binary
	err  error
}

// Main runs the tests of m and then removes the binary Binary built. Call
// it from TestMain: os.Exit(e2etest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	return code
}

// BinaryEnv names an environment variable that, when set, is the path of
// a prebuilt zimmer-sidecar binary to test instead of building one (a
// release artifact in CI, or a snapshot while the tree does not build).
const BinaryEnv = "E2E_SIDECAR_BINARY"

// Binary returns the path of a zimmer-sidecar binary built from this
// module's ./cmd/zimmer-sidecar, or the one BinaryEnv names. The first
// call builds it, with -race when the test binary has the race detector,
// so product races surface as "DATA RACE" reports on the sidecar's
// stderr; later calls reuse it. A build failure fails t.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			build.path, build.err = filepath.Abs(p)
			return
		}
		build.path, build.err = buildBinary()
	})
	if build.err != nil {
		t.Fatalf("build zimmer-sidecar: %v", build.err)
	}
	return build.path
}

func buildBinary() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "zimmer-sidecar-e2e-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	build.dir = dir
	out := filepath.Join(dir, "zimmer-sidecar")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/zimmer-sidecar")
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %v: %w\n%s", args, err, msg)
	}
	return out, nil
}

// goTool finds the go command: on PATH, else in the running toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// ModuleRoot returns the directory holding this module's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
