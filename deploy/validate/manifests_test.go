package validate

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// manifestsDir holds the plain Kubernetes example.
var manifestsDir = filepath.Join("..", "kubernetes")

// loadManifests decodes deploy/kubernetes strictly.
func loadManifests(t *testing.T) *Bundle {
	t.Helper()
	b, err := LoadDir(manifestsDir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inspect takes a bundle's pod apart or fails the test.
func inspect(t *testing.T, b *Bundle) *Pod {
	t.Helper()
	p, err := Inspect(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManifestsDecodeStrictly(t *testing.T) {
	b := loadManifests(t)
	counts := map[string]int{
		"Deployment":            len(b.Deployments),
		"Service":               len(b.Services),
		"ConfigMap":             len(b.ConfigMaps),
		"Secret":                len(b.Secrets),
		"PersistentVolumeClaim": len(b.Claims),
		"NetworkPolicy":         len(b.NetworkPolicies),
	}
	for kind, n := range counts {
		if n != 1 {
			t.Errorf("%s: got %d objects, want 1", kind, n)
		}
	}
}

func TestManifestsPassChecks(t *testing.T) {
	for _, err := range Check(loadManifests(t)) {
		t.Error(err)
	}
}

func TestManifestsShape(t *testing.T) {
	b := loadManifests(t)
	p := inspect(t, b)

	// Native sidecar: the only init container, kept running.
	if len(p.Spec.InitContainers) != 1 {
		t.Errorf("init containers: got %d, want 1", len(p.Spec.InitContainers))
	}
	if rp := p.Sidecar.RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy: got %v, want Always", rp)
	}

	// One replica on the bolt ledger, the ledger and ACME on the volume.
	if r := p.Deployment.Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("replicas: got %v, want 1", r)
	}
	want := SidecarConfig{
		Public: ":8080", Admin: ":9090",
		ShutdownDelay: 0, ShutdownGrace: 20 * time.Second,
		TLSMode: "off", TLSStorage: "/var/lib/zimmer-sidecar/acme",
		LedgerBackend: "bolt", LedgerPath: "/var/lib/zimmer-sidecar/ledger.db",
		Tokens: []string{"file:/run/secrets/zimmer-sidecar/service-token"},
		AppURL: "http://127.0.0.1:8000",

		EgressListen: "127.0.0.1:8081", EgressKeySource: "static",
		EgressKeys:   []string{"file:/run/secrets/zimmer-sidecar/openai-keys"},
		EgressOutbox: "/var/lib/zimmer-sidecar/egress-outbox.db",
		EgressCACert: "./data/egress-ca.pem", EgressCAKey: "./data/egress-ca.key",
	}
	if diff := diffJSON(want, *p.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	for _, file := range []string{p.Config.LedgerPath, p.Config.TLSStorage,
		p.Config.EgressOutbox} {
		if _, v := p.MountFor(p.Sidecar, file); volumeSource(v) != "persistentVolumeClaim" {
			t.Errorf("%s: on %s, want the persistent volume", file, volumeSource(v))
		}
	}

	// The app keeps serving for a while after the pod is deleted.
	if got := preStopSleep(p.Apps[0]); got <= 0 {
		t.Errorf("app preStop sleep: got %s, want > 0", got)
	}

	// Only the public port is open to the network.
	if got := OpenPorts(b, p); !slices.Equal(got, []string{"public"}) {
		t.Errorf("open ports: got %v, want [public]", got)
	}

	// The placeholder token is a digest that matches no token.
	tok, _ := SecretValue(b.Secrets[0], "service-token")
	if tok != "sha256:"+strings.Repeat("0", 64) {
		t.Errorf("placeholder token: got %q, want the all-zero sha256 digest", tok)
	}
}

// TestStrictDecodingRejects shows that the decoder refuses what a lenient
// one would let through.
func TestStrictDecodingRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n" +
			"spec:\n  selectr: {a: b}\n", `unknown field "spec.selectr"`},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n" +
			"data: {}\ndata: {}\n", `"data" already set`},
		{"unknown kind", "apiVersion: v1\nkind: Servise\nmetadata:\n  name: s\n",
			"no kind"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n" +
			"spec:\n  replicas: two\n", "replicas"},
		{"native sidecar field misspelt", "apiVersion: apps/v1\nkind: Deployment\n" +
			"metadata: {name: d}\nspec:\n  template:\n    spec:\n      initContainers:\n" +
			"        - name: s\n          restartPolicy: Always\n          restart: x\n",
			`unknown field "spec.template.spec.initContainers[0].restart"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestChecksCatch breaks the good manifests one rule at a time: each
// change must be reported, so no check passes by accident.
func TestChecksCatch(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, b *Bundle, p *Pod)
		want   string
	}{
		{"not a native sidecar", func(t *testing.T, b *Bundle, p *Pod) {
			p.Sidecar.RestartPolicy = nil
		}, "restartPolicy Always"},
		{"liveness on the wrong path", func(t *testing.T, b *Bundle, p *Pod) {
			p.Sidecar.LivenessProbe.HTTPGet.Path = "/health"
		}, "livenessProbe path"},
		{"readiness on the public port", func(t *testing.T, b *Bundle, p *Pod) {
			p.Sidecar.ReadinessProbe.HTTPGet.Port = intstr.FromString("public")
		}, "readinessProbe port public is not the admin port"},
		{"no startup probe", func(t *testing.T, b *Bundle, p *Pod) {
			p.Sidecar.StartupProbe = nil
		}, "startupProbe must be an httpGet probe"},
		{"admin on loopback", func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `admin = ":9090"`, `admin = "127.0.0.1:9090"`)
		}, "is loopback"},
		{"config port differs from the container's", func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `public = ":8080"`, `public = ":8081"`)
		}, `listen.public is port 8081 but the container port "public" is 8080`},
		{"no preStop on the app", func(t *testing.T, b *Bundle, p *Pod) {
			p.Apps[0].Lifecycle = nil
		}, "needs a preStop sleep"},
		{"grace period too short", func(t *testing.T, b *Bundle, p *Pod) {
			short := int64(30)
			p.Spec.TerminationGracePeriodSeconds = &short
		}, "terminationGracePeriodSeconds 30 is less than"},
		{"drain longer than the grace period", func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `shutdown_grace = "20s"`, `shutdown_grace = "60s"`)
		}, "terminationGracePeriodSeconds 90 is less than"},
		{"ledger off the volume", func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `path = "/var/lib/zimmer-sidecar/ledger.db"`,
				`path = "/tmp/ledger.db"`)
		}, "ledger.path /tmp/ledger.db is on no volume"},
		{"ledger on scratch space", func(t *testing.T, b *Bundle, p *Pod) {
			v := p.Volume("data")
			v.PersistentVolumeClaim = nil
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}, "which does not persist"},
		{"two replicas on bolt", func(t *testing.T, b *Bundle, p *Pod) {
			two := int32(2)
			p.Deployment.Spec.Replicas = &two
		}, `replicas need ledger.backend = "postgres"`},
		{"rolling update on bolt", func(t *testing.T, b *Bundle, p *Pod) {
			p.Deployment.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
		}, "needs strategy Recreate"},
		{"token file missing from the Secret", func(t *testing.T, b *Bundle, p *Pod) {
			b.Secrets[0].StringData = map[string]string{"token": "x"}
		}, "has no key service-token"},
		{"token literal in the ConfigMap", func(t *testing.T, b *Bundle, p *Pod) {
			setConfig(t, b, p, `"file:/run/secrets/zimmer-sidecar/service-token"`,
				`"hunter2"`)
		}, "a literal secret"},
		{"writable root filesystem", func(t *testing.T, b *Bundle, p *Pod) {
			f := false
			p.Sidecar.SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem must be true"},
		{"capabilities kept", func(t *testing.T, b *Bundle, p *Pod) {
			p.Apps[0].SecurityContext.Capabilities = nil
		}, "capabilities must drop ALL"},
		{"root allowed", func(t *testing.T, b *Bundle, p *Pod) {
			f := false
			p.Spec.SecurityContext.RunAsNonRoot = &f
		}, "must run as non-root"},
		{"no memory limit", func(t *testing.T, b *Bundle, p *Pod) {
			delete(p.Sidecar.Resources.Limits, corev1.ResourceMemory)
		}, "no memory limit"},
		{"Service to the admin port", func(t *testing.T, b *Bundle, p *Pod) {
			b.Services[0].Spec.Ports[0].TargetPort = intstr.FromInt32(9090)
		}, "not the sidecar's public port"},
		{"Service targets a port by name", func(t *testing.T, b *Bundle, p *Pod) {
			b.Services[0].Spec.Ports[0].TargetPort = intstr.FromString("public")
		}, "targetPort public by name"},
		{"NetworkPolicy names a port", func(t *testing.T, b *Bundle, p *Pod) {
			public := intstr.FromString("public")
			b.NetworkPolicies[0].Spec.Ingress[0].Ports[0].Port = &public
		}, "port public by name"},
		{"NetworkPolicy opens the admin port", func(t *testing.T, b *Bundle, p *Pod) {
			admin := intstr.FromInt32(9090)
			r := &b.NetworkPolicies[0].Spec.Ingress[0]
			r.Ports = append(r.Ports, networkingv1.NetworkPolicyPort{Port: &admin})
		}, "the admin port is open to everyone"},
		{"NetworkPolicy opens every port", func(t *testing.T, b *Bundle, p *Pod) {
			b.NetworkPolicies[0].Spec.Ingress[0].Ports = nil
		}, "no ports, so every port is open"},
		{"NetworkPolicy selects other pods", func(t *testing.T, b *Bundle, p *Pod) {
			b.NetworkPolicies[0].Spec.PodSelector.MatchLabels = map[string]string{"x": "y"}
		}, "no NetworkPolicy selects the pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := loadManifests(t)
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

// setConfig edits the sidecar's TOML in the bundle's ConfigMap.
func setConfig(t *testing.T, b *Bundle, p *Pod, old, new string) {
	t.Helper()
	if !strings.Contains(p.ConfigText, old) {
		t.Fatalf("%q is not in the config", old)
	}
	for _, cm := range b.ConfigMaps {
		for k, v := range cm.Data {
			if v == p.ConfigText {
				cm.Data[k] = strings.Replace(v, old, new, 1)
			}
		}
	}
}

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"one", "a: 1\n", []string{"a: 1\n"}},
		{"leading separator", "---\na: 1\n", []string{"a: 1\n"}},
		{"two", "a: 1\n---\nb: 2\n", []string{"a: 1\n", "b: 2\n"}},
		{"comment-only documents dropped", "# c\n---\n# only\n---\na: 1\n",
			[]string{"a: 1\n"}},
		{"separator with a comment", "a: 1\n--- # next\nb: 2", []string{"a: 1\n", "b: 2"}},
		{"not a separator", "a: |\n  ---x\n", []string{"a: |\n  ---x\n"}},
		{"crlf", "a: 1\r\n---\r\nb: 2\r\n", []string{"a: 1\r\n", "b: 2\r\n"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range SplitDocuments([]byte(tt.in)) {
				got = append(got, string(d))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzSplitDocuments: splitting never loses a content line, and every
// document decodes or fails without panicking.
func FuzzSplitDocuments(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nx: 1\n"))
	f.Add([]byte("--- # c\n---\n\n#\n"))
	f.Add([]byte("apiVersion: v1\nkind: Secret\nstringData: {a: b}\nstringData: {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs := SplitDocuments(data)
		var joined []byte
		for _, d := range docs {
			if !hasContent(d) {
				t.Fatalf("document without content: %q", d)
			}
			joined = append(joined, d...)
			_, _ = Decode(d) // any outcome but a panic
		}
		for _, line := range strings.Split(string(data), "\n") {
			l := strings.TrimSpace(line)
			if l == "" || l[0] == '#' || isSeparator([]byte(line)) {
				continue
			}
			if !strings.Contains(string(joined), line) {
				t.Fatalf("line %q lost", line)
			}
		}
	})
}
