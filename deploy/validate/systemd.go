package validate

import (
	"bufio"
	"fmt"
	"strings"
	"time"
)

// Unit is a systemd unit file: for each section, each key's values in
// file order (a key may repeat).
type Unit map[string]map[string][]string

// ParseUnit reads a unit file's sections and assignments. Comments and
// blank lines are skipped; a line ending in a backslash continues on the
// next. A line that is none of these is an error.
func ParseUnit(text string) (Unit, error) {
	u := Unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	n, pending := 0, ""
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if c, ok := strings.CutSuffix(line, `\`); ok {
			pending = c
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("unit line %d: not an assignment in a section", n)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
	}
	return u, sc.Err()
}

// Get returns the last value of key in section, as systemd applies it.
func (u Unit) Get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// CheckUnit returns every rule the sidecar's systemd unit breaks: a
// non-root user with a state directory, the hardening that keeps the
// process to that directory, reload by SIGHUP, and a stop timeout above
// the drain that cfg's shutdown keys allow, with the ledger settling (and,
// with the egress on, what it adds: egressStop).
func CheckUnit(u Unit, cfg *SidecarConfig) []error {
	var ps problems
	svc := "Service"
	want := func(key, value string) {
		if got := u.Get(svc, key); got != value {
			ps.addf("[Service] %s=%s, want %s", key, got, value)
		}
	}
	if u.Get(svc, "DynamicUser") != "yes" {
		if user := u.Get(svc, "User"); user == "" || user == "root" || user == "0" {
			ps.addf("[Service] runs as root: set User= or DynamicUser=yes")
		}
	}
	if u.Get(svc, "StateDirectory") == "" {
		ps.addf("[Service] no StateDirectory for the ledger")
	}
	want("ProtectSystem", "strict")
	want("NoNewPrivileges", "yes")
	want("KillSignal", "SIGTERM")
	if r := u.Get(svc, "ExecReload"); !strings.Contains(r, "-HUP") ||
		!strings.Contains(r, "$MAINPID") {
		ps.addf("[Service] ExecReload=%s, want a SIGHUP to $MAINPID", r)
	}
	if u.Get(svc, "EnvironmentFile") == "" {
		ps.addf("[Service] no EnvironmentFile for the service token")
	}
	if s := u.Get(svc, "ExecStart"); !strings.Contains(s, " run ") ||
		!strings.Contains(s, "-config ") {
		ps.addf("[Service] ExecStart=%s, want \"zimmer-sidecar run -config FILE\"", s)
	}
	stop, err := parseTimespan(u.Get(svc, "TimeoutStopSec"))
	var egress time.Duration
	if cfg.EgressEnabled() {
		egress = egressStop
	}
	need := cfg.ShutdownDelay + cfg.ShutdownGrace + ledgerSettle + egress
	switch {
	case err != nil:
		ps.addf("[Service] TimeoutStopSec: %v", err)
	case stop <= need:
		ps.addf("[Service] TimeoutStopSec=%s must exceed the drain, %s "+
			"(delay %s + grace %s + settle %s + egress stop %s)",
			stop, need, cfg.ShutdownDelay, cfg.ShutdownGrace, ledgerSettle, egress)
	}
	return ps
}

// parseTimespan reads a systemd time span like "40s", "1min 30s" or "90"
// (seconds).
func parseTimespan(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("not set")
	}
	if n, err := time.ParseDuration(s + "s"); err == nil && !strings.ContainsAny(s, "hmsu") {
		return n, nil
	}
	repl := strings.NewReplacer("min", "m", "sec", "s", "hr", "h", " ", "")
	d, err := time.ParseDuration(repl.Replace(s))
	if err != nil {
		return 0, fmt.Errorf("time span %q: %w", s, err)
	}
	return d, nil
}
