package validate

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitFile is the systemd unit for VMs.
var unitFile = filepath.Join("..", "systemd", "zimmer-sidecar.service")

// exampleConfig is the sidecar's reference config, whose shutdown
// defaults the unit's stop timeout must cover.
func exampleConfig(t *testing.T) *SidecarConfig {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repoRoot, "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := EffectiveConfig(string(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func readUnit(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

func TestSystemdUnitRules(t *testing.T) {
	u, err := ParseUnit(readUnit(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range CheckUnit(u, exampleConfig(t)) {
		t.Error(err)
	}
}

// TestSystemdUnitRulesCatch breaks the unit one rule at a time.
func TestSystemdUnitRulesCatch(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"root", "User=zimmer-sidecar", "User=root", "runs as root"},
		{"no state directory", "StateDirectory=zimmer-sidecar", "", "no StateDirectory"},
		{"weaker protection", "ProtectSystem=strict", "ProtectSystem=full",
			"ProtectSystem=full, want strict"},
		{"privileges", "NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges"},
		{"reload restarts", "ExecReload=/bin/kill -HUP $MAINPID",
			"ExecReload=/bin/systemctl restart zimmer-sidecar", "want a SIGHUP"},
		{"kill signal", "KillSignal=SIGTERM", "KillSignal=SIGKILL", "KillSignal"},
		{"stop timeout below the drain", "TimeoutStopSec=75s", "TimeoutStopSec=25",
			"must exceed the drain"},
		{"no token file", "EnvironmentFile=", "#EnvironmentFile=", "no EnvironmentFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := readUnit(t)
			if !strings.Contains(text, tt.old) {
				t.Fatalf("%q is not in the unit", tt.old)
			}
			u, err := ParseUnit(strings.Replace(text, tt.old, tt.new, 1))
			if err != nil {
				t.Fatal(err)
			}
			errs := CheckUnit(u, exampleConfig(t))
			if !slices.ContainsFunc(errs, func(err error) bool {
				return strings.Contains(err.Error(), tt.want)
			}) {
				t.Errorf("got %v, want an error containing %q", errors.Join(errs...), tt.want)
			}
		})
	}
}

// TestSystemdStopTimeoutCoversEgress: with the egress on, the stop
// timeout must also cover what the egress adds (egressStop).
func TestSystemdStopTimeoutCoversEgress(t *testing.T) {
	// 45 s exceeds the example's drain (0 + 25 + 5 s), not with the
	// egress's 27 s more.
	u, err := ParseUnit(strings.Replace(readUnit(t), "TimeoutStopSec=75s",
		"TimeoutStopSec=45s", 1))
	if err != nil {
		t.Fatal(err)
	}
	cfg := exampleConfig(t)
	if errs := CheckUnit(u, cfg); len(errs) != 0 {
		t.Fatalf("without the egress: got %v, want no problems", errors.Join(errs...))
	}
	cfg.EgressListen = "127.0.0.1:8081"
	errs := CheckUnit(u, cfg)
	if !slices.ContainsFunc(errs, func(err error) bool {
		return strings.Contains(err.Error(), "TimeoutStopSec=45s must exceed the drain, 57s")
	}) {
		t.Errorf("with the egress: got %v, want the stop timeout reported",
			errors.Join(errs...))
	}
}

func TestParseTimespan(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"40s", "40s"}, {"90", "1m30s"}, {"1min 30s", "1m30s"}, {"2min", "2m0s"},
		{"500ms", "500ms"},
	}
	for _, tt := range tests {
		got, err := parseTimespan(tt.in)
		if err != nil || got.String() != tt.want {
			t.Errorf("parseTimespan(%q): got %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := parseTimespan("soon"); err == nil {
		t.Error(`parseTimespan("soon"): got no error`)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the unit, with
// the binary's path pointed at a freshly built one (verify requires the
// executables to exist). Any message fails: verify reports unknown keys
// and bad values on stderr yet exits 0. A misspelt key shows that it does.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing (apt-get install systemd)")
		}
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	bin, err := sidecarBinary()
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(readUnit(t), "/usr/local/bin/zimmer-sidecar", bin)
	if out, err := verifyUnit(t, analyze, text); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	bad := strings.Replace(text, "ProtectSystem=strict", "ProtectSystm=strict", 1)
	if out, _ := verifyUnit(t, analyze, bad); !strings.Contains(out, "ProtectSystm") {
		t.Errorf("verify of a misspelt key: got %q, want it named", out)
	}
}

// verifyUnit runs systemd-analyze verify on text and returns its output.
func verifyUnit(t *testing.T, analyze, text string) (string, error) {
	t.Helper()
	unit := filepath.Join(t.TempDir(), "zimmer-sidecar.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", unit)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// FuzzParseUnit: any text parses or fails without panicking, and every
// value parsed comes from an assignment in a section.
func FuzzParseUnit(f *testing.F) {
	f.Add("[Service]\nUser=x\nExecStart=/bin/a \\\n  b\n")
	f.Add("User=x\n")
	f.Add("[A]\n;c\n#d\n[B]\nk = v\nk=w\n")
	f.Fuzz(func(t *testing.T, text string) {
		u, err := ParseUnit(text)
		if err != nil {
			return
		}
		for section, keys := range u {
			for key, values := range keys {
				if strings.ContainsAny(key, "\n") || len(values) == 0 {
					t.Fatalf("[%s] %q: bad entry %q", section, key, values)
				}
				_ = u.Get(section, key)
				for _, v := range values {
					_, _ = parseTimespan(v) // any outcome but a panic
				}
			}
		}
	})
}
