package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
)

// ErrClosed is returned by Reload once the sidecar was closed.
var ErrClosed = errors.New("sidecar: closed")

// reloadable names the settings Reload applies to a running sidecar: a
// top-level key covers its whole section. Every other setting needs a
// restart: the listeners and their other limits (listen.*), the ledger's store
// and rules (ledger.*), TLS (tls.*), what /health reports as the
// automation (automation.*), the app's address (the probes' base),
// log.access and auth.failures_per_minute (auth.Limiter cannot be
// resized). A key added to the configuration is restart-only until it is
// listed here and applied below, so a reload never pretends to apply it.
var reloadable = map[string]bool{
	"listen.max_body":             true,
	"listen.requests_per_second":  true, // read per request (ratelimit.go)
	"listen.burst":                true,
	"log.level":                   true, // only with Options.Level
	"auth.tokens":                 true,
	"auth.accept_bearer":          true,
	"auth.bcrypt_cache_size":      true,
	"app.passthrough":             true,
	"app.connect_timeout":         true,
	"app.response_header_timeout": true,
	"app.max_idle_conns":          true,
	"app.probe":                   true,
	"zimmer":                      true,
	"route":                       true,
	"egress.keys":                 true, // static keys: a new pool (egress.go)
	"egress.rpm_limit":            true,
	"egress.daily_token_limit":    true,
}

// Reload applies a new, validated configuration (from config.Load) to the
// running sidecar: service tokens, routes, app hooks and timeouts, Zimmer
// prefixes, body limit, probes and (with Options.Level) the log level.
//
// Everything is built before anything changes, and then swapped at once:
// on error nothing changed. Requests in flight and open streams finish
// with the snapshot they started with. Settings that need a restart keep
// their running values and are named in a warning. Reload is safe for
// concurrent use (calls are serialised) and returns ErrClosed after Close.
func (s *Sidecar) Reload(cfg *config.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	running := s.applied()

	// 1. Restart-only settings keep their running values.
	next, changed, restart := s.mergeConfig(running, cfg)
	if len(restart) > 0 {
		s.log.Warn("reload: settings need a restart to change; "+
			"their running values stay in effect",
			slog.Any("restart_required", restart))
	}
	if len(changed) == 0 {
		s.log.Info("configuration reloaded; nothing to apply")
		return nil
	}

	// 2. Build everything that can fail before changing anything.
	v, snap, err := s.build(next)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	swapKeys, err := s.reloadKeys(next, changed)
	if err != nil {
		_ = snap.proxy.Close()
		return fmt.Errorf("reload: %w", err)
	}
	if slices.Contains(changed, "app.probe") {
		if err := s.monitor.Update(probeOptions(next.App.Probes)); err != nil {
			_ = snap.proxy.Close()
			return fmt.Errorf("reload: health probes: %w", err)
		}
	}

	// 3. Swap. Requests load the snapshot once, so each sees either the
	// old configuration or the new one, never a mix.
	s.commit(v, snap)
	if swapKeys != nil {
		swapKeys()
	}
	s.live.Store(next)
	s.log.Info("configuration reloaded", slog.Any("changed", changed))
	if s.level != nil {
		s.level.Set(next.Log.Level)
	}
	return nil
}

// applied returns the configuration in effect: the one New got, or the
// last one Reload applied.
func (s *Sidecar) applied() *config.Config { return s.live.Load() }

// mergeConfig returns a copy of cfg whose restart-only settings hold
// running's values, the reloadable keys that differ, and the
// restart-only keys that differ. cfg itself is not modified.
func (s *Sidecar) mergeConfig(running, cfg *config.Config) (
	next *config.Config, changed, restart []string) {
	merged := *cfg
	canReload := func(key string) bool {
		if key == "log.level" && s.level == nil {
			return false
		}
		section, _, _ := strings.Cut(key, ".")
		return reloadable[key] || reloadable[section]
	}
	diffFields("", reflect.ValueOf(running).Elem(), reflect.ValueOf(&merged).Elem(),
		func(key string, old, cur reflect.Value) {
			if canReload(key) {
				changed = append(changed, key)
				return
			}
			restart = append(restart, key)
			cur.Set(old)
		})
	return &merged, changed, restart
}

// diffFields calls differ for each setting whose value differs between
// old and cur, two values of the same struct type. Settings are the
// exported fields of the top level and of its struct sections, named by
// their toml keys ("listen.public"); deeper values are compared whole.
// cur's fields are settable, so differ may put old's value back.
func diffFields(prefix string, old, cur reflect.Value, differ func(key string,
	old, cur reflect.Value)) {
	t := cur.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key := tomlKey(f)
		if prefix != "" {
			key = prefix + "." + key
		}
		o, c := old.Field(i), cur.Field(i)
		if prefix == "" && f.Type.Kind() == reflect.Struct {
			diffFields(key, o, c, differ)
			continue
		}
		if !reflect.DeepEqual(o.Interface(), c.Interface()) {
			differ(key, o, c)
		}
	}
}

// tomlKey is the field's key in the file.
func tomlKey(f reflect.StructField) string {
	if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name != "" {
		return name
	}
	return strings.ToLower(f.Name)
}
