package validate

import (
	"slices"
	"strings"
	"testing"
)

// testKeys stands in for the OpenAI keys file.
const testKeys = "test-key-one-not-a-secret\ntest-key-two-not-a-secret\n"

// egressAnnotation is the pod annotation that rolls the pods when what the
// egress reads at start changes.
const egressAnnotation = "zimmer-sidecar/egress-checksum"

// withEgress returns the values of a render with the egress on: the
// service token, the keys file in the chart's Secret, and egress values
// merged over enabled=true.
func withEgress(egress map[string]any) map[string]any {
	e := map[string]any{"enabled": true}
	for k, x := range egress {
		e[k] = x
	}
	return map[string]any{
		"secret": map[string]any{"data": map[string]any{
			"service-token": testToken, "openai-keys": testKeys}},
		"egress": e,
	}
}

// otherConfig returns the config keys of p that SidecarConfig does not
// cover, or fails the test.
func otherConfig(t *testing.T, p *Pod) map[string]any {
	t.Helper()
	other, err := OtherKeys(p.ConfigText)
	if err != nil {
		t.Fatal(err)
	}
	return other
}

// TestChartEgressToggle: egress.enabled adds the [egress] section, the
// app's OpenAI variables and the annotation; off (the default) adds none
// of them.
func TestChartEgressToggle(t *testing.T) {
	off := inspect(t, render(t, withToken(nil)))
	if strings.Contains(off.ConfigText, "[egress") || off.Config.EgressEnabled() {
		t.Errorf("disabled: config has an egress section:\n%s", off.ConfigText)
	}
	if _, ok := otherConfig(t, off)["egress"]; ok {
		t.Error("disabled: config has egress keys")
	}
	for _, name := range []string{envBaseURL, envAPIKey} {
		if envVar(off.Apps[0], name) != nil {
			t.Errorf("disabled: the app has %s", name)
		}
	}
	if _, ok := off.Deployment.Spec.Template.Annotations[egressAnnotation]; ok {
		t.Errorf("disabled: the pod has the %s annotation", egressAnnotation)
	}

	b := render(t, withEgress(nil))
	for _, err := range Check(b) {
		t.Error(err)
	}
	on := inspect(t, b)
	want := SidecarConfig{
		EgressListen: "127.0.0.1:8081", EgressKeySource: "static",
		EgressKeys:   []string{"file:/run/secrets/zimmer-sidecar/openai-keys"},
		EgressOutbox: "/var/lib/zimmer-sidecar/egress-outbox.db",
		EgressCACert: "./data/egress-ca.pem", EgressCAKey: "./data/egress-ca.key",
	}
	c := on.Config
	got := SidecarConfig{
		EgressListen: c.EgressListen, EgressProxyListen: c.EgressProxyListen,
		EgressKeySource: c.EgressKeySource, EgressKeys: c.EgressKeys,
		EgressOutbox: c.EgressOutbox, EgressCACert: c.EgressCACert,
		EgressCAKey: c.EgressCAKey,
	}
	if diff := diffJSON(want, got); diff != "" {
		t.Errorf("egress config (-want +got):\n%s", diff)
	}
	egress, _ := otherConfig(t, on)["egress"].(map[string]any)
	wantOther := map[string]any{"upstream": "https://api.openai.com",
		"auth_style": "bearer", "outbox": map[string]any{"max_items": int64(100000)}}
	if diff := diffJSON(wantOther, egress); diff != "" {
		t.Errorf("other egress keys (-want +got):\n%s", diff)
	}
	for name, want := range map[string]string{
		envBaseURL: "http://127.0.0.1:8081/v1", envAPIKey: "placeholder",
	} {
		if v, ok := plainEnv(on.Apps[0], name); !ok || v != want {
			t.Errorf("app %s: got %q, want %q", name, v, want)
		}
	}
	if v, _ := SecretValue(b.Secrets[0], "openai-keys"); v != testKeys {
		t.Errorf("openai-keys: got %q, want the value given", v)
	}
	if _, ok := on.Deployment.Spec.Template.Annotations[egressAnnotation]; !ok {
		t.Errorf("enabled: the pod lacks the %s annotation", egressAnnotation)
	}
}

// TestChartEgressOptions: the budget, the upstream and its auth style,
// extra keys, a Secret of its own for the keys, platform keys and the
// postgres ledger each render as they say.
func TestChartEgressOptions(t *testing.T) {
	b := render(t, withEgress(map[string]any{
		"upstream":  "https://x.openai.azure.com/openai",
		"authStyle": "api-key",
		"budget": map[string]any{"enabled": true, "tokensPerUnit": 500,
			"requireUser": true},
		"outboxMaxItems": 10,
		"extraConfig":    "rpm_limit = 60\n",
	}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	egress, _ := otherConfig(t, inspect(t, b))["egress"].(map[string]any)
	want := map[string]any{
		"upstream": "https://x.openai.azure.com/openai", "auth_style": "api-key",
		"rpm_limit": int64(60),
		"budget": map[string]any{"enabled": true, "tokens_per_unit": int64(500),
			"reserve_tokens": int64(4096), "require_user": true,
			"platform_ledger": false},
		"outbox": map[string]any{"max_items": int64(10)},
	}
	if diff := diffJSON(want, egress); diff != "" {
		t.Errorf("egress keys (-want +got):\n%s", diff)
	}

	// Keys in a Secret of their own, mounted beside the chart's.
	b = render(t, withToken(map[string]any{"egress": map[string]any{"enabled": true,
		"keysSecret": map[string]any{"name": "openai", "key": "keys"}}}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	p := inspect(t, b)
	if !slices.Equal(p.Config.EgressKeys,
		[]string{"file:/run/secrets/zimmer-sidecar-openai/keys"}) {
		t.Errorf("egress.keys: got %v, want the own Secret's file", p.Config.EgressKeys)
	}
	m, v := p.MountFor(p.Sidecar, "/run/secrets/zimmer-sidecar-openai/keys")
	if m == nil || !m.ReadOnly || v.Secret == nil || v.Secret.SecretName != "openai" {
		t.Errorf("keys mount: got %+v on %+v, want Secret openai read-only", m, v)
	}
	if slices.Contains(SecretKeys(b.Secrets[0]), "openai-keys") {
		t.Error("the chart's Secret holds openai-keys")
	}

	// Platform keys on postgres: no keys file, no outbox file.
	b = render(t, withToken(map[string]any{
		"egress": map[string]any{"enabled": true, "keySource": "platform"},
		"ledger": map[string]any{"backend": "postgres",
			"dsnSecret": map[string]any{"name": "db"}},
		"persistence": map[string]any{"enabled": false},
	}))
	for _, err := range Check(b) {
		t.Error(err)
	}
	p = inspect(t, b)
	if len(p.Config.EgressKeys) != 0 || p.Config.EgressOutbox != defaults["egress.outbox.path"] {
		t.Errorf("platform on postgres: got keys %v, outbox %q; want none and the default",
			p.Config.EgressKeys, p.Config.EgressOutbox)
	}
}

// TestChartEgressRollsPods: the annotation changes with what the egress
// reads at start only (its settings, the keys the chart holds), and not
// with the rest of the config, which the sidecar reloads.
func TestChartEgressRollsPods(t *testing.T) {
	annotation := func(values map[string]any) string {
		t.Helper()
		p := inspect(t, render(t, values))
		return p.Deployment.Spec.Template.Annotations[egressAnnotation]
	}
	base := annotation(withEgress(nil))
	budget := withEgress(map[string]any{"budget": map[string]any{"enabled": true}})
	keys := withEgress(nil)
	keys["secret"].(map[string]any)["data"].(map[string]any)["openai-keys"] = "other\n"
	config := withEgress(nil)
	config["config"] = strings.Replace(chartConfig(t), "default_demo_tokens = 5",
		"default_demo_tokens = 6", 1)
	for name, tt := range map[string]struct {
		values  map[string]any
		changes bool
	}{
		"budget": {budget, true}, "keys": {keys, true}, "rest of the config": {config, false},
	} {
		if got := annotation(tt.values) != base; got != tt.changes {
			t.Errorf("%s: annotation changed %v, want %v", name, got, tt.changes)
		}
	}
}

// TestChartEgressGuards: values with which the egress cannot work fail
// the render with the reason.
func TestChartEgressGuards(t *testing.T) {
	on := map[string]any{"enabled": true}
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"no keys", withToken(map[string]any{"egress": on}),
			"egress.keySource=static needs secret.data.openai-keys"},
		{"config has its own egress section", func() map[string]any {
			v := withEgress(nil)
			v["config"] = "[automation]\nversion = \"1\"\n\n[egress.budget]\nenabled = true\n"
			return v
		}(), "config has an egress section"},
		{"port of the admin listener", withEgress(map[string]any{
			"listen": "127.0.0.1:9090"}), "takes a port of sidecar.ports"},
		{"app sets its own key", func() map[string]any {
			v := withEgress(nil)
			v["app"] = map[string]any{"env": []any{
				map[string]any{"name": "OPENAI_API_KEY", "value": "sk-x"}}}
			return v
		}(), "app.env sets OPENAI_API_KEY"},
		{"listen beyond loopback", withEgress(map[string]any{"listen": "0.0.0.0:8081"}),
			"/egress/listen"},
		{"upstream with credentials", withEgress(map[string]any{
			"upstream": "https://user:pw@api.openai.com"}), "/egress/upstream"},
		{"unknown key source", withEgress(map[string]any{"keySource": "vault"}),
			"/egress/keySource"},
		{"misspelt value", withEgress(map[string]any{"budgets": true}),
			"additional properties 'budgets' not allowed"},
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

	// A Secret managed outside the chart is trusted to hold the keys.
	b := render(t, map[string]any{"egress": on,
		"secret": map[string]any{"existingSecret": "mine"}})
	for _, err := range Check(b) {
		t.Error(err)
	}
}
