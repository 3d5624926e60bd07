package validate

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
)

// envPrefix starts the environment variables that override the sidecar's
// configuration keys (ZIMMER_SIDECAR_LISTEN__PUBLIC is listen.public);
// envConfig names the file instead and overrides no key.
const (
	envPrefix = "ZIMMER_SIDECAR_"
	envConfig = envPrefix + "CONFIG"
)

// SidecarConfig is the part of the sidecar's configuration the deployment
// must agree with: listeners, shutdown timing, where state and secrets
// live, and how the app reaches the egress. Keys the file and the
// environment leave out take the sidecar's defaults (config.example.toml).
// The sidecar's own check-config run on the same file and environment is
// the full validation; this is the subset the manifests are checked
// against.
type SidecarConfig struct {
	Public        string
	Admin         string
	ShutdownDelay time.Duration
	ShutdownGrace time.Duration
	TLSMode       string
	TLSStorage    string
	TLSHTTP       string
	LedgerBackend string
	LedgerPath    string
	LedgerDSN     string
	Tokens        []string
	AppURL        string

	// The egress (docs/egress.md): its base-URL and forward-proxy
	// listeners (both "" when it is off), its static keys, its outbox
	// and the forward proxy's local CA.
	EgressListen      string
	EgressProxyListen string
	EgressKeySource   string
	EgressKeys        []string
	EgressOutbox      string
	EgressCACert      string
	EgressCAKey       string
}

// EgressEnabled reports whether the sidecar runs an egress listener.
func (c *SidecarConfig) EgressEnabled() bool {
	return c.EgressListen != "" || c.EgressProxyListen != ""
}

// defaults are the sidecar's defaults for the keys of SidecarConfig.
var defaults = map[string]string{
	"listen.public":         ":8080",
	"listen.admin":          "127.0.0.1:9090",
	"listen.shutdown_delay": "0s",
	"listen.shutdown_grace": "25s",
	"tls.mode":              "off",
	"tls.storage":           "./data/acme",
	"tls.http":              "",
	"ledger.backend":        "bolt",
	"ledger.path":           "./data/ledger.db",
	"ledger.dsn":            "",
	"auth.tokens":           "",
	"app.url":               "http://127.0.0.1:8000",
	"egress.listen":         "",
	"egress.proxy.listen":   "",
	"egress.key_source":     "static",
	"egress.keys":           "",
	"egress.outbox.path":    "./data/egress-outbox.db",
	"egress.proxy.ca_cert":  "./data/egress-ca.pem",
	"egress.proxy.ca_key":   "./data/egress-ca.key",
}

// EffectiveConfig reads the TOML file text as the sidecar would with the
// container's environment env: a ZIMMER_SIDECAR_ variable overrides its
// key. Variables taken from Secrets or fields (valueFrom) cannot be known
// here and are reported as errors when they name a key this reads.
func EffectiveConfig(text string, env []corev1.EnvVar) (*SidecarConfig, error) {
	var doc map[string]any
	if err := toml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("config toml: %w", err)
	}
	values := map[string]string{}
	for key := range defaults {
		if v, ok := lookup(doc, key); ok {
			values[key] = v
		}
	}
	for _, e := range env {
		if !strings.HasPrefix(e.Name, envPrefix) || e.Name == envConfig {
			continue
		}
		key := strings.ToLower(strings.ReplaceAll(
			strings.TrimPrefix(e.Name, envPrefix), "__", "."))
		if _, known := defaults[key]; !known {
			continue
		}
		if e.ValueFrom != nil {
			return nil, fmt.Errorf("env %s: a valueFrom override of %s cannot be checked",
				e.Name, key)
		}
		values[key] = e.Value
	}
	get := func(key string) string {
		if v, ok := values[key]; ok {
			return v
		}
		return defaults[key]
	}
	delay, err := time.ParseDuration(get("listen.shutdown_delay"))
	if err != nil {
		return nil, fmt.Errorf("listen.shutdown_delay: %w", err)
	}
	grace, err := time.ParseDuration(get("listen.shutdown_grace"))
	if err != nil {
		return nil, fmt.Errorf("listen.shutdown_grace: %w", err)
	}
	return &SidecarConfig{
		Public:        get("listen.public"),
		Admin:         get("listen.admin"),
		ShutdownDelay: delay,
		ShutdownGrace: grace,
		TLSMode:       get("tls.mode"),
		TLSStorage:    get("tls.storage"),
		TLSHTTP:       get("tls.http"),
		LedgerBackend: get("ledger.backend"),
		LedgerPath:    get("ledger.path"),
		LedgerDSN:     get("ledger.dsn"),
		Tokens:        splitList(get("auth.tokens")),
		AppURL:        get("app.url"),

		EgressListen:      get("egress.listen"),
		EgressProxyListen: get("egress.proxy.listen"),
		EgressKeySource:   get("egress.key_source"),
		EgressKeys:        splitList(get("egress.keys")),
		EgressOutbox:      get("egress.outbox.path"),
		EgressCACert:      get("egress.proxy.ca_cert"),
		EgressCAKey:       get("egress.proxy.ca_key"),
	}, nil
}

// splitList splits a list written as text (see lookup); "" is no list.
func splitList(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(text, ",")
}

// OtherKeys returns the TOML document text without the keys that
// SidecarConfig covers (tables left empty are dropped): the rest of the
// configuration, which no manifest depends on.
func OtherKeys(text string) (map[string]any, error) {
	var doc map[string]any
	if err := toml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("config toml: %w", err)
	}
	for key := range defaults {
		deleteKey(doc, strings.Split(key, "."))
	}
	return doc, nil
}

// deleteKey removes the key at path from m, and each table on the way
// that it leaves empty.
func deleteKey(m map[string]any, path []string) {
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	sub, ok := m[path[0]].(map[string]any)
	if !ok {
		return
	}
	deleteKey(sub, path[1:])
	if len(sub) == 0 {
		delete(m, path[0])
	}
}

// lookup finds the dotted key in doc and returns it as text: scalars as
// written, a list of strings joined with commas (as the environment
// writes lists).
func lookup(doc map[string]any, key string) (string, bool) {
	segs := strings.Split(key, ".")
	var cur any = doc
	for _, s := range segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[s]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ","), true
	default:
		return fmt.Sprint(v), true
	}
}

// SplitListen splits a listen address into its host and port number.
func SplitListen(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: bad port", addr)
	}
	return host, port, nil
}

// isLoopback reports whether a listen host accepts only local connections.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
