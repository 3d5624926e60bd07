package e2etest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startTimeout bounds how long a process may take to print its readiness
// line. Generous: a race-enabled binary on a busy 2-core machine is slow.
const startTimeout = 30 * time.Second

// App names one of the example apps under examples/.
type App struct {
	Name        string // "python-app" or "node-app"
	Interpreter string // the runtime command: "python3" or "node"
	Script      string // relative to the module root
}

// The example apps.
var (
	PythonApp = App{Name: "python-app", Interpreter: "python3",
		Script: "examples/python-app/app.py"}
	NodeApp = App{Name: "node-app", Interpreter: "node",
		Script: "examples/node-app/server.js"}
)

// ConfigPath returns the path of the app's example sidecar configuration.
func (a App) ConfigPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(moduleRoot(t), "examples", a.Name, "zimmer-sidecar.toml")
}

// Require skips t when the app's runtime is not installed.
func (a App) Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(a.Interpreter); err != nil {
		t.Skipf("%s needs %s, which is not on PATH", a.Name, a.Interpreter)
	}
}

// AppProcess is a running example app.
type AppProcess struct {
	*Process
	Addr string // host:port from its "listening on" line
}

// URL returns the app's base URL.
func (a *AppProcess) URL() string { return "http://" + a.Addr }

// Port returns the port the app listens on.
func (a *AppProcess) Port() int {
	_, p, _ := net.SplitHostPort(a.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// StartApp starts the app on 127.0.0.1:port (0: any free port) keeping its
// state under dataDir (empty: in memory), and waits for its "listening on"
// line. Skips t when the runtime is missing.
func StartApp(t testing.TB, a App, port int, dataDir string) *AppProcess {
	t.Helper()
	a.Require(t)
	args := []string{filepath.Join(moduleRoot(t), a.Script),
		"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--grace", "2"}
	if dataDir != "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			t.Fatalf("app data dir: %v", err)
		}
		switch a {
		case PythonApp:
			args = append(args, "--data-dir", dataDir)
		default:
			args = append(args, "--data-file", filepath.Join(dataDir, "shop.json"))
		}
	}
	p := Start(t, Spec{Name: a.Name, Path: a.Interpreter, Args: args})
	l, err := p.WaitLine(startTimeout, func(l Line) bool {
		return l.Stream == Stdout && strings.HasPrefix(l.Text, "listening on ")
	})
	if err != nil {
		t.Fatalf("start %s: %v\n%s", a.Name, err, p.Output())
	}
	return &AppProcess{Process: p, Addr: strings.TrimPrefix(l.Text, "listening on ")}
}

// SidecarOptions configure StartSidecar. The listeners are always
// 127.0.0.1:0.
type SidecarOptions struct {
	Config  string // the TOML file
	AppURL  string // overrides app.url
	Ledger  string // overrides ledger.path
	Token   string // exported as ZIMMER_SERVICE_TOKEN
	Env     []string
	Dir     string // working directory; empty: the test's
	Name    string // shown in failure output; empty: "sidecar"
	Timeout time.Duration
}

// Sidecar is a running zimmer-sidecar.
type Sidecar struct {
	*Process
	Public string // host:port of the public listener
	Admin  string // host:port of the admin listener
}

// PublicURL returns the public listener's base URL.
func (s *Sidecar) PublicURL() string { return "http://" + s.Public }

// AdminURL returns the admin listener's base URL.
func (s *Sidecar) AdminURL() string { return "http://" + s.Admin }

// StartSidecar runs `zimmer-sidecar run -config opts.Config` with both
// listeners on 127.0.0.1:0 and waits for its "listening" log line, from
// which it learns the addresses. In t.Cleanup it kills the sidecar and
// fails t when the sidecar's stderr holds a data race report.
func StartSidecar(t testing.TB, opts SidecarOptions) *Sidecar {
	t.Helper()
	name := opts.Name
	if name == "" {
		name = "sidecar"
	}
	env := []string{
		"ZIMMER_SIDECAR_LISTEN__PUBLIC=127.0.0.1:0",
		"ZIMMER_SIDECAR_LISTEN__ADMIN=127.0.0.1:0",
		"ZIMMER_SERVICE_TOKEN=" + opts.Token,
	}
	if opts.AppURL != "" {
		env = append(env, "ZIMMER_SIDECAR_APP__URL="+opts.AppURL)
	}
	if opts.Ledger != "" {
		env = append(env, "ZIMMER_SIDECAR_LEDGER__PATH="+opts.Ledger)
	}
	env = append(env, opts.Env...)
	p := Start(t, Spec{
		Name: name,
		Path: Binary(t),
		Args: []string{"run", "-config", opts.Config},
		Dir:  opts.Dir,
		Env:  env,
	})
	t.Cleanup(func() {
		// Registered after Start's cleanup, so it runs first: kill, then
		// look at everything the process wrote.
		p.Kill()
		if strings.Contains(p.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race (see its output)", name)
		}
	})

	timeout := opts.Timeout
	if timeout == 0 {
		timeout = startTimeout
	}
	var rec struct {
		Msg    string `json:"msg"`
		Public string `json:"public"`
		Admin  string `json:"admin"`
	}
	_, err := p.WaitLine(timeout, func(l Line) bool {
		return l.Stream == Stderr && json.Unmarshal([]byte(l.Text), &rec) == nil &&
			rec.Msg == "listening"
	})
	if err != nil {
		t.Fatalf("start %s: %v\n%s", name, err, p.Output())
	}
	return &Sidecar{Process: p, Public: rec.Public, Admin: rec.Admin}
}

// WriteConfig copies the TOML file src into dir (t.TempDir when empty)
// after applying each edit in order, and returns the copy's path. An edit
// replaces the text Old (which must occur exactly Count times, or at least
// once when Count is 0) with New, so an example that changed shape fails
// loudly instead of silently testing something else.
func WriteConfig(t testing.TB, src, dir string, edits ...Edit) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read config: %v", err)
	}
	text := string(data)
	for _, e := range edits {
		n := strings.Count(text, e.Old)
		if n == 0 || (e.Count > 0 && n != e.Count) {
			t.Fatalf("config %s: %q occurs %d times, want %d", src, e.Old, n, e.Count)
		}
		text = strings.ReplaceAll(text, e.Old, e.New)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	out := filepath.Join(dir, "zimmer-sidecar.toml")
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	return out
}

// Edit is one text replacement of WriteConfig.
type Edit struct {
	Old, New string
	Count    int
}

// FastProbes returns the edit that makes the example configs' probe run
// every interval with the given timeout (shorter than every), turning
// failed after failAfter consecutive failures and healthy again after
// passAfter passes.
func FastProbes(every, timeout string, failAfter, passAfter int) Edit {
	return Edit{
		Old: "every = \"10s\"\ntimeout = \"2s\"\n",
		New: fmt.Sprintf("every = %q\ntimeout = %q\nfail_after = %d\npass_after = %d\n",
			every, timeout, failAfter, passAfter),
		Count: 1,
	}
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
