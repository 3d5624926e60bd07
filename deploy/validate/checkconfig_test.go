package validate

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the main module's directory.
var repoRoot = filepath.Join("..", "..")

// sidecarBinary builds cmd/zimmer-sidecar once per test run.
var sidecarBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "zimmer-sidecar-validate")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "zimmer-sidecar")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/zimmer-sidecar")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{err, out}
	}
	return bin, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "build zimmer-sidecar: " + e.err.Error() + "\n" + string(e.out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := sidecarBinary(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// TestSidecarAcceptsConfig runs the sidecar's own check-config on the
// configuration each deployment gives it: the ConfigMap's file with the
// container's environment. Secret files are copied to a temporary
// directory and the token and egress key references pointed there; the
// DSN and files of Secrets outside the bundle get stand-ins (check-config
// connects to nothing).
func TestSidecarAcceptsConfig(t *testing.T) {
	bin, err := sidecarBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		bundle func(t *testing.T) *Bundle
	}{
		{"manifests", loadManifests},
		{"chart default", func(t *testing.T) *Bundle { return render(t, withToken(nil)) }},
		{"chart replicas on postgres", func(t *testing.T) *Bundle {
			return render(t, withToken(map[string]any{
				"replicas": 2,
				"ledger": map[string]any{"backend": "postgres",
					"dsnSecret": map[string]any{"name": "db"}},
				"persistence": map[string]any{"enabled": false},
			}))
		}},
		{"chart acme", func(t *testing.T) *Bundle {
			return render(t, withToken(map[string]any{
				"sidecar": map[string]any{"ports": map[string]any{"http": 8081}},
				"config": strings.Replace(chartConfig(t), `mode = "off"`,
					"mode = \"acme\"\nnames = [\"automation.example.com\"]", 1),
			}))
		}},
		{"manifests forward proxy", loadProxyAlternative},
		{"chart egress", func(t *testing.T) *Bundle {
			return render(t, withEgress(map[string]any{
				"authStyle":   "api-key",
				"upstream":    "https://x.openai.azure.com/openai",
				"budget":      map[string]any{"enabled": true, "requireUser": true},
				"extraConfig": "rpm_limit = 60\ncall_timeout = \"5m\"\n",
			}))
		}},
		{"chart egress keys in their own Secret", func(t *testing.T) *Bundle {
			return render(t, withToken(map[string]any{"egress": map[string]any{
				"enabled": true, "keysSecret": map[string]any{"name": "openai"}}}))
		}},
		{"chart egress platform keys on postgres", func(t *testing.T) *Bundle {
			v := withToken(map[string]any{
				"egress": map[string]any{"enabled": true, "keySource": "platform"},
				"ledger": map[string]any{"backend": "postgres",
					"dsnSecret": map[string]any{"name": "db"}},
				"config": strings.Replace(chartConfig(t), "[automation]\n",
					"[automation]\nid = 42\nplatform_url = \"https://platform.example\"\n", 1),
			})
			return render(t, v)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := tt.bundle(t)
			p := inspect(t, b)
			dir := t.TempDir()
			config := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(config, []byte(p.ConfigText), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "check-config", config)
			cmd.Env = checkEnv(t, b, p, dir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("check-config: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), ": ok") {
				t.Errorf("check-config said %q, want ok", out.String())
			}
		})
	}
}

// TestSidecarRejectsBrokenConfig: the same run fails on a config the
// sidecar refuses, so a pass above means something; the egress keys file
// is read, so a Secret without a key in it fails too.
func TestSidecarRejectsBrokenConfig(t *testing.T) {
	bin, err := sidecarBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		config func(text string) string
		keys   string // the Secret's openai-keys; "" leaves it
		want   string
	}{
		{"unknown key", func(text string) string {
			return strings.Replace(text, "[app]\n", "[app]\nretries = 3\n", 1)
		}, "", "app.retries"},
		{"egress beyond loopback", func(text string) string {
			return strings.Replace(text, `listen = "127.0.0.1:8081"`,
				`listen = "0.0.0.0:8081"`, 1)
		}, "", "egress.listen"},
		{"no key in the keys file", func(text string) string { return text },
			"# the keys go here\n", "egress.keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := loadManifests(t)
			if tt.keys != "" {
				b.Secrets[0].StringData["openai-keys"] = tt.keys
			}
			p := inspect(t, b)
			dir := t.TempDir()
			config := filepath.Join(dir, "config.toml")
			text := tt.config(p.ConfigText)
			if text == p.ConfigText && tt.keys == "" {
				t.Fatal("the case changes nothing")
			}
			if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "check-config", config)
			cmd.Env = checkEnv(t, b, p, dir)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("check-config: got %v, %q; want a failure naming %s",
					err, out, tt.want)
			}
		})
	}
}

// checkEnv returns the environment check-config runs with: this process's
// without ZIMMER_ variables, then the sidecar container's.
func checkEnv(t *testing.T, b *Bundle, p *Pod, dir string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ZIMMER_") {
			env = append(env, kv)
		}
	}
	for _, e := range p.Sidecar.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.Name == "ZIMMER_LEDGER_DSN":
			env = append(env, e.Name+"=postgres://zimmer@127.0.0.1:1/zimmer")
		default:
			t.Fatalf("env %s: no stand-in for its valueFrom", e.Name)
		}
	}
	env = append(env, "ZIMMER_SIDECAR_AUTH__TOKENS="+
		strings.Join(copySecretRefs(t, b, p, p.Config.Tokens, dir), ","))
	if len(p.Config.EgressKeys) > 0 {
		env = append(env, "ZIMMER_SIDECAR_EGRESS__KEYS="+
			strings.Join(copySecretRefs(t, b, p, p.Config.EgressKeys, dir), ","))
	}
	return env
}

// copySecretRefs returns refs with each "file:" reference pointed at a
// copy of its Secret file in dir.
func copySecretRefs(t *testing.T, b *Bundle, p *Pod, refs []string, dir string) []string {
	t.Helper()
	var out []string
	for _, ref := range refs {
		file, ok := strings.CutPrefix(ref, "file:")
		if !ok {
			out = append(out, ref)
			continue
		}
		out = append(out, "file:"+copySecretFile(t, b, p, file, dir))
	}
	return out
}

// secretStandIn is the content of a Secret file whose Secret is managed
// outside the bundle.
const secretStandIn = "stand-in-for-a-secret-outside-the-bundle\n"

// copySecretFile writes the Secret file that file names into dir and
// returns the copy's path.
func copySecretFile(t *testing.T, b *Bundle, p *Pod, file, dir string) string {
	t.Helper()
	m, v := p.MountFor(p.Sidecar, file)
	if m == nil || v == nil || v.Secret == nil {
		t.Fatalf("%s is on no Secret volume", file)
	}
	value := secretStandIn
	if s := b.Secret(v.Secret.SecretName); s != nil {
		var ok bool
		if value, ok = SecretValue(s, filepath.Base(file)); !ok {
			t.Fatalf("Secret %s has no key %s", s.Name, filepath.Base(file))
		}
	}
	out := filepath.Join(dir, v.Name+"-"+filepath.Base(file))
	if err := os.WriteFile(out, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}
