package validate

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestManifestsEgress: the example wires the app's OpenAI calls through
// the egress, with its keys from the Secret and its outbox on the volume.
func TestManifestsEgress(t *testing.T) {
	b := loadManifests(t)
	p := inspect(t, b)
	app := p.Apps[0]
	for name, want := range map[string]string{
		envBaseURL: "http://" + p.Config.EgressListen + "/v1",
		envAPIKey:  "placeholder",
	} {
		if got, ok := plainEnv(app, name); !ok || got != want {
			t.Errorf("app %s: got %q, want %q", name, got, want)
		}
	}
	if _, v := p.MountFor(p.Sidecar, p.Config.EgressOutbox); volumeSource(v) !=
		"persistentVolumeClaim" {
		t.Errorf("%s: on %s, want the persistent volume", p.Config.EgressOutbox,
			volumeSource(v))
	}

	// The placeholder is one line the sidecar takes as a key (it refuses
	// an empty list), and not an OpenAI key.
	keys, ok := SecretValue(b.Secrets[0], "openai-keys")
	if !ok {
		t.Fatal("the Secret has no openai-keys")
	}
	var lines []string
	for line := range strings.Lines(keys) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || strings.HasPrefix(lines[0], "sk-") ||
		!strings.Contains(lines[0], "REPLACE-ME") {
		t.Errorf("openai-keys: got key lines %q, want one REPLACE-ME placeholder", lines)
	}
}

// TestManifestsAlternatives: the budget and forward-proxy blocks the
// manifests carry as comments, uncommented, still pass every check.
func TestManifestsAlternatives(t *testing.T) {
	b := loadProxyAlternative(t)
	for _, err := range Check(b) {
		t.Error(err)
	}
	p := inspect(t, b)
	if p.Config.EgressProxyListen != "127.0.0.1:3128" {
		t.Errorf("egress.proxy.listen: got %q, want 127.0.0.1:3128",
			p.Config.EgressProxyListen)
	}
	if got, _ := plainEnv(p.Apps[0], envHTTPSProxy); got != "http://127.0.0.1:3128" {
		t.Errorf("app %s: got %q, want the proxy", envHTTPSProxy, got)
	}
	other, err := OtherKeys(p.ConfigText)
	if err != nil {
		t.Fatal(err)
	}
	budget, _ := other["egress"].(map[string]any)["budget"].(map[string]any)
	if budget["enabled"] != true {
		t.Errorf("egress.budget: got %v, want enabled", budget)
	}
}

// loadProxyAlternative loads deploy/kubernetes with the commented
// [egress.budget] and [egress.proxy] blocks of the ConfigMap and the
// commented volumes, mounts and variables of the Deployment put in, and
// the app's OPENAI_BASE_URL taken out, as their comments say.
func loadProxyAlternative(t *testing.T) *Bundle {
	t.Helper()
	entries, err := os.ReadDir(manifestsDir)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bundle{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(manifestsDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		switch e.Name() {
		case "configmap.yaml":
			text = uncommentTOML(t, text, "[egress.budget]")
			text = uncommentTOML(t, text, "[egress.proxy]")
		case "deployment.yaml":
			text = uncommentYAML(t, text)
		}
		if err := b.AddYAML(e.Name(), []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	p := inspect(t, b)
	app := p.Apps[0]
	app.Env = slices.DeleteFunc(app.Env, func(e corev1.EnvVar) bool {
		return e.Name == envBaseURL
	})
	return b
}

// commentedYAML matches a commented-out list entry or its continuation,
// inside the pod spec (indented 8 or more).
var commentedYAML = regexp.MustCompile(`(?m)^( {8,})# ((?:- |  +)\S.*)$`)

// uncommentYAML puts the commented entries of a manifest in.
func uncommentYAML(t *testing.T, text string) string {
	t.Helper()
	out := commentedYAML.ReplaceAllString(text, "$1$2")
	if out == text {
		t.Fatal("no commented entries")
	}
	return out
}

// uncommentTOML puts the commented table that starts with header in: its
// lines are "#   " comments inside the ConfigMap's block, up to the first
// line that is not.
func uncommentTOML(t *testing.T, text, header string) string {
	t.Helper()
	const prefix = "    #   "
	lines := strings.SplitAfter(text, "\n")
	i := slices.Index(lines, prefix+header+"\n")
	if i < 0 {
		t.Fatalf("no commented %s", header)
	}
	for ; i < len(lines) && strings.HasPrefix(lines[i], prefix); i++ {
		lines[i] = "    " + strings.TrimPrefix(lines[i], prefix)
	}
	return strings.Join(lines, "")
}

// TestNetworkPolicyEgressExample: the egress rules the NetworkPolicy
// suggests in its comments decode strictly, allow DNS and HTTPS out, and
// leave the ingress rules intact.
func TestNetworkPolicyEgressExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifestsDir, "networkpolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	_, example, ok := strings.Cut(text, "in this policy:\n")
	if !ok {
		t.Fatal("no example in the comments")
	}
	var spec strings.Builder
	for line := range strings.Lines(example) {
		rest, ok := strings.CutPrefix(line, "#   ")
		if !ok {
			break
		}
		spec.WriteString("  " + rest)
	}
	const types = "  policyTypes: [\"Ingress\"]\n"
	if !strings.Contains(text, types) {
		t.Fatalf("%q is not in the policy", types)
	}
	b := &Bundle{}
	for _, name := range []string{"configmap.yaml", "deployment.yaml", "secret.yaml",
		"pvc.yaml", "service.yaml"} {
		d, err := os.ReadFile(filepath.Join(manifestsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddYAML(name, d); err != nil {
			t.Fatal(err)
		}
	}
	policy := strings.Replace(text, types, spec.String(), 1)
	if err := b.AddYAML("networkpolicy.yaml", []byte(policy)); err != nil {
		t.Fatal(err)
	}
	np := b.NetworkPolicies[0]
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{
		networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policyTypes: got %v, want [Ingress Egress]", np.Spec.PolicyTypes)
	}
	var ports []int32
	for _, r := range np.Spec.Egress {
		for _, port := range r.Ports {
			ports = append(ports, port.Port.IntVal)
		}
	}
	if !slices.Equal(ports, []int32{53, 53, 443}) {
		t.Errorf("egress ports: got %v, want [53 53 443]", ports)
	}
	for _, err := range Check(b) {
		t.Error(err)
	}
}

// TestEgressChecksCatch breaks the manifests' egress one rule at a time.
func TestEgressChecksCatch(t *testing.T) {
	tests := []struct {
		name   string
		load   func(t *testing.T) *Bundle
		mutate func(t *testing.T, b *Bundle, p *Pod)
		want   string
	}{
		{"keys file missing from the Secret", loadManifests,
			func(t *testing.T, b *Bundle, p *Pod) {
				delete(b.Secrets[0].StringData, "openai-keys")
			}, "egress.keys[0]: Secret notes-assistant-sidecar has no key openai-keys"},
		{"no keys", loadManifests, func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `keys = ["file:/run/secrets/zimmer-sidecar/openai-keys"]`,
				`keys = []`)
		}, "egress.keys is empty"},
		{"outbox off the volume", loadManifests, func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `path = "/var/lib/zimmer-sidecar/egress-outbox.db"`,
				`path = "/tmp/egress-outbox.db"`)
		}, "egress.outbox.path /tmp/egress-outbox.db is on no volume"},
		{"no time for the egress to stop", loadManifests,
			func(t *testing.T, b *Bundle, p *Pod) {
				// Enough without the egress (50 s), not with it (77 s).
				g := int64(76)
				p.Spec.TerminationGracePeriodSeconds = &g
			}, "terminationGracePeriodSeconds 76 is less than the shutdown it must cover: 1m17s"},
		{"app calls OpenAI directly", loadManifests, func(t *testing.T, b *Bundle, p *Pod) {
			envVar(p.Apps[0], envBaseURL).Value = "https://api.openai.com/v1"
		}, `OPENAI_BASE_URL is "https://api.openai.com/v1", want "http://127.0.0.1:8081/v1"`},
		{"app not pointed at the egress", loadManifests,
			func(t *testing.T, b *Bundle, p *Pod) {
				p.Apps[0].Env = slices.DeleteFunc(p.Apps[0].Env, func(e corev1.EnvVar) bool {
					return e.Name == envBaseURL
				})
			}, "no app container sends its OpenAI calls there"},
		{"app holds a real key", loadManifests, func(t *testing.T, b *Bundle, p *Pod) {
			e := envVar(p.Apps[0], envAPIKey)
			e.Value, e.ValueFrom = "", &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "openai"},
					Key:                  "key",
				}}
		}, "OPENAI_API_KEY comes from Secret openai"},
		{"app points at an egress that is off", loadManifests,
			func(t *testing.T, b *Bundle, p *Pod) {
				setConfig(t, b, p, `listen = "127.0.0.1:8081"`, `listen = ""`)
			}, "egress.listen is not set: nothing serves it"},
		{"CA key readable by the app", loadProxyAlternative,
			func(t *testing.T, b *Bundle, p *Pod) {
				p.Apps[0].VolumeMounts = append(p.Apps[0].VolumeMounts,
					corev1.VolumeMount{Name: "egress-key", MountPath: "/key"})
			}, "app app mounts volume egress-key, which holds egress.proxy.ca_key"},
		{"CA certificate not shared", loadProxyAlternative,
			func(t *testing.T, b *Bundle, p *Pod) {
				p.Apps[0].VolumeMounts = slices.DeleteFunc(p.Apps[0].VolumeMounts,
					func(m corev1.VolumeMount) bool { return m.Name == "egress-ca" })
			}, "no app container mounts volume egress-ca"},
		{"CA files that outlive each other", loadProxyAlternative,
			func(t *testing.T, b *Bundle, p *Pod) {
				setConfig(t, b, p, `ca_key = "/run/zimmer-egress-key/egress-ca.key"`,
					`ca_key = "/var/lib/zimmer-sidecar/egress-ca.key"`)
			}, "ca_cert is on volume egress-ca (emptyDir) and ca_key on data " +
				"(persistentVolumeClaim)"},
		{"CA on the read-only root", loadProxyAlternative,
			func(t *testing.T, b *Bundle, p *Pod) {
				setConfig(t, b, p, `ca_cert = "/run/zimmer-egress-ca/egress-ca.pem"`,
					`ca_cert = "/etc/egress-ca.pem"`)
			}, "egress.proxy.ca_cert /etc/egress-ca.pem is on no volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := tt.load(t)
			tt.mutate(t, b, inspect(t, b))
			errs := Check(b)
			if !slices.ContainsFunc(errs, func(err error) bool {
				return strings.Contains(err.Error(), tt.want)
			}) {
				t.Errorf("got %v, want an error containing %q", errors.Join(errs...), tt.want)
			}
		})
	}
}
