package validate

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
)

// chartDir is the Helm chart.
var chartDir = filepath.Join("..", "helm", "zimmer-sidecar")

// testToken stands in for the token the platform administrator gives.
const testToken = "test-token-not-a-secret"

// withToken returns the values every render needs (the service token)
// merged with more.
func withToken(more map[string]any) map[string]any {
	v := map[string]any{
		"secret": map[string]any{"data": map[string]any{"service-token": testToken}},
	}
	for k, x := range more {
		v[k] = x
	}
	return v
}

// render renders the chart or fails the test.
func render(t *testing.T, values map[string]any) *Bundle {
	t.Helper()
	b, err := RenderChart(chartDir, values)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChartLint(t *testing.T) {
	for _, m := range LintChart(chartDir, withToken(nil)) {
		t.Errorf("helm lint: %s", m.Error())
	}
}

// TestChartLintFails shows the linter in-process does fail: a values
// file that breaks the schema is reported.
func TestChartLintFails(t *testing.T) {
	msgs := LintChart(chartDir, withToken(map[string]any{"replica": 2}))
	if !slices.ContainsFunc(msgs, func(m support.Message) bool {
		return strings.Contains(m.Error(), "replica")
	}) {
		t.Errorf("got %v, want a lint error naming the unknown value replica", msgs)
	}
}

func TestChartDefaultPassesChecks(t *testing.T) {
	for _, err := range Check(render(t, withToken(nil))) {
		t.Error(err)
	}
}

// TestChartMatchesManifests: the chart's default render, with the egress
// on, deploys what the plain manifests deploy.
func TestChartMatchesManifests(t *testing.T) {
	plain := loadManifests(t)
	chart := render(t, withEgress(nil))
	want := EssentialsOf(plain, inspect(t, plain))
	got := EssentialsOf(chart, inspect(t, chart))
	if diff := diffJSON(want, got); diff != "" {
		t.Errorf("chart differs from deploy/kubernetes (-manifests +chart):\n%s", diff)
	}
	if n := len(chart.Secrets); n != 1 {
		t.Fatalf("secrets: got %d, want 1", n)
	}
	if v, _ := SecretValue(chart.Secrets[0], "service-token"); v != testToken {
		t.Errorf("service-token: got %q, want the value given", v)
	}
}

func TestChartGuards(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"replicas on bolt", withToken(map[string]any{"replicas": 2}),
			"replicas > 1 requires ledger.backend=postgres"},
		{"no token", map[string]any{},
			"set secret.existingSecret or secret.data"},
		{"postgres without its DSN", withToken(map[string]any{
			"ledger": map[string]any{"backend": "postgres"}}),
			"requires ledger.dsnSecret.name"},
		{"replicas on one ReadWriteOnce volume", withToken(map[string]any{
			"replicas": 3,
			"ledger": map[string]any{"backend": "postgres",
				"dsnSecret": map[string]any{"name": "db"}}}),
			"set persistence.accessModes to [ReadWriteMany]"},
		{"bolt without persistence", withToken(map[string]any{
			"persistence": map[string]any{"enabled": false}}),
			"ledger.backend=bolt requires persistence.enabled=true"},
		{"unknown backend", withToken(map[string]any{
			"ledger": map[string]any{"backend": "sqlite"}}), "/ledger/backend"},
		{"misspelt value", withToken(map[string]any{"replica": 2}),
			"additional properties 'replica' not allowed"},
		{"same ports", withToken(map[string]any{
			"sidecar": map[string]any{"ports": map[string]any{"admin": 8080}}}),
			"must differ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := RenderChart(chartDir, tt.values)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestChartReplicas: postgres with a shared volume renders replicas that
// roll without downtime and take the DSN from the Secret.
func TestChartReplicas(t *testing.T) {
	b := render(t, withToken(map[string]any{
		"replicas": 3,
		"ledger": map[string]any{"backend": "postgres",
			"dsnSecret": map[string]any{"name": "ledger-db", "key": "url"}},
		"persistence": map[string]any{"accessModes": []any{"ReadWriteMany"}},
	}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	p := inspect(t, b)
	if got := *p.Deployment.Spec.Replicas; got != 3 {
		t.Errorf("replicas: got %d, want 3", got)
	}
	s := p.Deployment.Spec.Strategy
	if s.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy: got %+v, want RollingUpdate with maxUnavailable 0", s)
	}
	if p.Config.LedgerBackend != "postgres" || p.Config.LedgerDSN != "env:ZIMMER_LEDGER_DSN" {
		t.Errorf("ledger: got %s %q, want postgres from env:ZIMMER_LEDGER_DSN",
			p.Config.LedgerBackend, p.Config.LedgerDSN)
	}
	dsn := envVar(p.Sidecar, "ZIMMER_LEDGER_DSN")
	if dsn == nil || dsn.ValueFrom == nil || dsn.ValueFrom.SecretKeyRef == nil ||
		dsn.ValueFrom.SecretKeyRef.Name != "ledger-db" ||
		dsn.ValueFrom.SecretKeyRef.Key != "url" {
		t.Errorf("ZIMMER_LEDGER_DSN: got %+v, want from Secret ledger-db key url", dsn)
	}
	if envVar(p.Sidecar, "ZIMMER_SIDECAR_LEDGER__PATH") != nil {
		t.Error("ledger.path is set for the postgres ledger")
	}
}

// TestChartACMEPort: the plain-HTTP listener for ACME is a container port,
// a Service port and open in the NetworkPolicy; admin stays closed.
func TestChartACMEPort(t *testing.T) {
	b := render(t, withToken(map[string]any{
		"sidecar": map[string]any{"ports": map[string]any{"http": 8081}},
		"service": map[string]any{"port": 443, "type": "LoadBalancer"},
		"config": strings.Replace(chartConfig(t), `mode = "off"`,
			"mode = \"acme\"\nnames = [\"automation.example.com\"]", 1),
	}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	p := inspect(t, b)
	if p.Config.TLSHTTP != ":8081" || p.SidecarPort("http") != 8081 {
		t.Errorf("tls.http %q, container port %d: want :8081 on both",
			p.Config.TLSHTTP, p.SidecarPort("http"))
	}
	if got := OpenPorts(b, p); !slices.Equal(got, []string{"http", "public"}) {
		t.Errorf("open ports: got %v, want [http public]", got)
	}
	var ports []ServicePort
	for _, sp := range b.Services[0].Spec.Ports {
		target := sp.TargetPort.String()
		if cp, _ := p.ResolvePort(sp.TargetPort); cp != nil {
			target = cp.Name
		}
		ports = append(ports, ServicePort{sp.Port, target})
	}
	want := []ServicePort{{443, "public"}, {80, "http"}}
	if !slices.Equal(ports, want) {
		t.Errorf("service ports: got %v, want %v", ports, want)
	}
}

// TestChartNetworkPolicyToggle: the policy can be left out, and the admin
// port opened to named peers only.
func TestChartNetworkPolicyToggle(t *testing.T) {
	off := render(t, withToken(map[string]any{
		"networkPolicy": map[string]any{"enabled": false}}))
	if n := len(off.NetworkPolicies); n != 0 {
		t.Errorf("disabled: got %d NetworkPolicies, want 0", n)
	}
	errs := Check(off)
	if !slices.ContainsFunc(errs, func(err error) bool {
		return strings.Contains(err.Error(), "no NetworkPolicy selects the pod")
	}) {
		t.Errorf("disabled: got %v, want the open admin port reported", errors.Join(errs...))
	}

	monitoring := map[string]any{"namespaceSelector": map[string]any{
		"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}
	b := render(t, withToken(map[string]any{"networkPolicy": map[string]any{
		"enabled": true, "adminFrom": []any{monitoring}}}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	if got := OpenPorts(b, inspect(t, b)); !slices.Equal(got, []string{"public"}) {
		t.Errorf("open ports: got %v, want [public]", got)
	}
}

// TestChartExistingSecret: a Secret managed outside the chart is mounted
// and the chart makes none.
func TestChartExistingSecret(t *testing.T) {
	b := render(t, map[string]any{"secret": map[string]any{"existingSecret": "mine"}})
	if n := len(b.Secrets); n != 0 {
		t.Errorf("got %d Secrets, want 0", n)
	}
	p := inspect(t, b)
	if v := p.Volume("secrets"); v == nil || v.Secret == nil || v.Secret.SecretName != "mine" {
		t.Errorf("secrets volume: got %+v, want Secret mine", v)
	}
}

// chartConfig returns the default config of the chart's values.
func chartConfig(t *testing.T) string {
	t.Helper()
	b := render(t, withToken(nil))
	return inspect(t, b).ConfigText
}

// diffJSON compares two values through their indented JSON and returns
// the differing lines ("-" want, "+" got), or "" when they are equal.
func diffJSON(want, got any) string {
	w, _ := json.MarshalIndent(want, "", "  ")
	g, _ := json.MarshalIndent(got, "", "  ")
	if string(w) == string(g) {
		return ""
	}
	wl, gl := strings.Split(string(w), "\n"), strings.Split(string(g), "\n")
	var out []string
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var a, b string
		if i < len(wl) {
			a = wl[i]
		}
		if i < len(gl) {
			b = gl[i]
		}
		if a != b {
			out = append(out, "- "+a, "+ "+b)
		}
	}
	return strings.Join(out, "\n")
}
