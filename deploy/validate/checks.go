package validate

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// What the sidecar's shutdown may take after its drain
// (internal/sidecar/run.go and egress.go), in its order: handlers cut by
// the drain settling with the ledger; then, with the egress on, the egress
// calls cut when the grace ran out finishing their finalisation
// (egress.DefaultFinalizeTimeout), its listeners closing, the outbox
// flush (deliverFlushTimeout, but a consume sent just before that ends is
// never cut and runs to outbox.DefaultCallTimeout) and the count of what
// the outbox keeps for the next start.
const (
	ledgerSettle   = 5 * time.Second
	egressFinalize = 10 * time.Second
	egressClose    = 1 * time.Second
	outboxFlush    = 5 * time.Second
	outboxConsume  = 10 * time.Second
	outboxStats    = 1 * time.Second
)

// egressStop is what the egress adds to the shutdown when it is on:
// 10 + 1 + 5 + 10 + 1 = 27 s.
const egressStop = egressFinalize + egressClose + outboxFlush + outboxConsume + outboxStats

// problems collects rule violations.
type problems []error

func (ps *problems) addf(format string, args ...any) {
	*ps = append(*ps, fmt.Errorf(format, args...))
}

// Check returns every rule the bundle breaks; none means it passes. The
// rules are those of a working sidecar pod: see the check functions.
func Check(b *Bundle) []error {
	p, err := Inspect(b)
	if err != nil {
		return []error{err}
	}
	var ps problems
	checkNativeSidecar(p, &ps)
	checkListeners(p, &ps)
	checkProbes(p, &ps)
	checkShutdown(p, &ps)
	checkState(b, p, &ps)
	checkSecrets(b, p, &ps)
	checkEgress(p, &ps)
	checkSecurity(p, &ps)
	checkResources(p, &ps)
	checkServices(b, p, &ps)
	checkNetworkPolicies(b, p, &ps)
	return ps
}

// checkNativeSidecar: the sidecar is an init container that keeps running
// (restartPolicy Always), so the kubelet stops it after the app.
func checkNativeSidecar(p *Pod, ps *problems) {
	rp := p.Sidecar.RestartPolicy
	if rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		ps.addf("sidecar: init container needs restartPolicy Always (a native sidecar)")
	}
	if p.Deployment.Spec.Template.Spec.RestartPolicy != "" &&
		p.Deployment.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		ps.addf("deployment: pod restartPolicy must be Always")
	}
}

// checkListeners: the configured listeners are the container's ports; the
// admin listener binds beyond loopback so the kubelet can probe it.
func checkListeners(p *Pod, ps *problems) {
	_, public, err := SplitListen(p.Config.Public)
	if err != nil {
		ps.addf("listen.public: %v", err)
	} else if got := p.SidecarPort("public"); int(got) != public {
		ps.addf("listen.public is port %d but the container port \"public\" is %d",
			public, got)
	}
	host, admin, err := SplitListen(p.Config.Admin)
	if err != nil {
		ps.addf("listen.admin: %v", err)
	} else {
		if got := p.SidecarPort("admin"); int(got) != admin {
			ps.addf("listen.admin is port %d but the container port \"admin\" is %d",
				admin, got)
		}
		if isLoopback(host) {
			ps.addf("listen.admin %q is loopback: the kubelet's probes cannot reach it",
				p.Config.Admin)
		}
	}
	if p.Config.TLSHTTP != "" {
		_, port, err := SplitListen(p.Config.TLSHTTP)
		if err != nil {
			ps.addf("tls.http: %v", err)
		} else if got := p.SidecarPort("http"); int(got) != port {
			ps.addf("tls.http is port %d but the container port \"http\" is %d", port, got)
		}
	}
}

// checkProbes: liveness on /livez, readiness and startup on /readyz, all
// plain HTTP GETs on the admin port.
func checkProbes(p *Pod, ps *problems) {
	admin := p.SidecarPort("admin")
	want := []struct {
		kind  string
		probe *corev1.Probe
		paths []string
	}{
		{"livenessProbe", p.Sidecar.LivenessProbe, []string{"/livez"}},
		{"readinessProbe", p.Sidecar.ReadinessProbe, []string{"/readyz"}},
		{"startupProbe", p.Sidecar.StartupProbe, []string{"/readyz", "/livez"}},
	}
	for _, w := range want {
		if w.probe == nil || w.probe.HTTPGet == nil {
			ps.addf("sidecar: %s must be an httpGet probe", w.kind)
			continue
		}
		g := w.probe.HTTPGet
		if !slices.Contains(w.paths, g.Path) {
			ps.addf("sidecar: %s path %q, want one of %v", w.kind, g.Path, w.paths)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			ps.addf("sidecar: %s scheme %s: the admin listener is plain HTTP",
				w.kind, g.Scheme)
		}
		cp, c := p.ResolvePort(g.Port)
		if cp == nil || c != p.Sidecar || cp.ContainerPort != admin {
			ps.addf("sidecar: %s port %s is not the admin port %d",
				w.kind, g.Port.String(), admin)
		}
	}
}

// checkShutdown: the pod's grace period covers the whole termination in
// native sidecar order: each app's preStop sleep and drain, then the
// sidecar's preStop, shutdown delay, drain and ledger settling, and with
// the egress on what it adds (egressStop).
func checkShutdown(p *Pod, ps *problems) {
	tgps := int64(30) // the API's default
	if g := p.Spec.TerminationGracePeriodSeconds; g != nil {
		tgps = *g
	}
	var apps time.Duration
	for _, c := range p.Apps {
		sleep := preStopSleep(c)
		if sleep == 0 {
			ps.addf("app %s: needs a preStop sleep so it keeps serving while "+
				"endpoints forget the pod", c.Name)
		}
		apps = max(apps, sleep+appGrace(c))
	}
	var egress time.Duration
	if p.Config.EgressEnabled() {
		egress = egressStop
	}
	need := apps + preStopSleep(p.Sidecar) + p.Config.ShutdownDelay +
		p.Config.ShutdownGrace + ledgerSettle + egress
	if time.Duration(tgps)*time.Second < need {
		ps.addf("terminationGracePeriodSeconds %d is less than the shutdown it must "+
			"cover: %s (app preStop and drain %s, sidecar delay %s, grace %s, "+
			"settle %s, egress stop %s)", tgps, need, apps,
			p.Config.ShutdownDelay, p.Config.ShutdownGrace, ledgerSettle, egress)
	}
}

// preStopSleep returns the container's preStop sleep, 0 when it has none.
func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}

// appGrace returns the drain the example apps are given with "--grace N"
// (seconds), 0 when the arguments do not say.
func appGrace(c *corev1.Container) time.Duration {
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--grace=")
		if !ok && a == "--grace" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return time.Duration(f * float64(time.Second))
		}
	}
	return 0
}

// checkState: the bolt ledger is on a writable persistent volume, one
// process uses it (one replica, Recreate), and ACME state is writable.
func checkState(b *Bundle, p *Pod, ps *problems) {
	replicas := int32(1)
	if r := p.Deployment.Spec.Replicas; r != nil {
		replicas = *r
	}
	switch p.Config.LedgerBackend {
	case "bolt":
		if replicas > 1 {
			ps.addf("replicas %d with the bolt ledger: replicas need "+
				"ledger.backend = \"postgres\"", replicas)
		}
		if p.Deployment.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			ps.addf("the bolt ledger needs strategy Recreate: the old pod must " +
				"release the file before the new one opens it")
		}
		checkWritable(p, "ledger.path", p.Config.LedgerPath, ps)
		if p.Config.EgressEnabled() {
			checkWritable(p, "egress.outbox.path", p.Config.EgressOutbox, ps)
		}
	case "postgres":
		if p.Config.LedgerDSN == "" {
			ps.addf("ledger.backend postgres without ledger.dsn")
		}
	default:
		ps.addf("ledger.backend %q is not bolt or postgres", p.Config.LedgerBackend)
	}
	if p.Config.TLSMode == "acme" {
		checkWritable(p, "tls.storage", p.Config.TLSStorage, ps)
	}
	for _, v := range p.Spec.Volumes {
		pvc := v.PersistentVolumeClaim
		if pvc == nil {
			continue
		}
		claim := b.Claim(pvc.ClaimName)
		if claim == nil {
			ps.addf("volume %s: PersistentVolumeClaim %s is not in the bundle",
				v.Name, pvc.ClaimName)
			continue
		}
		if replicas > 1 &&
			!slices.Contains(claim.Spec.AccessModes, corev1.ReadWriteMany) {
			ps.addf("PersistentVolumeClaim %s: %d replicas share it, so it must "+
				"be ReadWriteMany", claim.Name, replicas)
		}
	}
}

// checkWritable: file lies on a writable mount of the sidecar, on a
// persistent volume.
func checkWritable(p *Pod, key, file string, ps *problems) {
	if !path.IsAbs(file) {
		ps.addf("%s %q: use an absolute path on a volume (the root "+
			"filesystem is read-only)", key, file)
		return
	}
	m, v := p.MountFor(p.Sidecar, file)
	switch {
	case m == nil || v == nil:
		ps.addf("%s %s is on no volume of the sidecar", key, file)
	case m.ReadOnly:
		ps.addf("%s %s is on the read-only mount %s", key, file, m.MountPath)
	case v.PersistentVolumeClaim == nil:
		ps.addf("%s %s is on volume %s, which does not persist", key, file, v.Name)
	}
}

// checkSecrets: every secret reference of the config resolves in the pod:
// "file:" under a mounted Secret that has the file, "env:" to a variable
// of the sidecar.
func checkSecrets(b *Bundle, p *Pod, ps *problems) {
	refs := map[string]string{}
	for i, t := range p.Config.Tokens {
		refs[fmt.Sprintf("auth.tokens[%d]", i)] = t
	}
	if p.Config.LedgerBackend == "postgres" {
		refs["ledger.dsn"] = p.Config.LedgerDSN
	}
	if len(p.Config.Tokens) == 0 {
		ps.addf("auth.tokens is empty: every protected call would be refused")
	}
	if p.Config.EgressEnabled() && p.Config.EgressKeySource == "static" {
		for i, k := range p.Config.EgressKeys {
			refs[fmt.Sprintf("egress.keys[%d]", i)] = k
		}
		if len(p.Config.EgressKeys) == 0 {
			ps.addf("egress.keys is empty: the sidecar would not start")
		}
	}
	for key, ref := range refs {
		switch {
		case strings.HasPrefix(ref, "file:"):
			checkFileRef(b, p, key, strings.TrimPrefix(ref, "file:"), ps)
		case strings.HasPrefix(ref, "env:"):
			name := strings.TrimPrefix(ref, "env:")
			if !slices.ContainsFunc(p.Sidecar.Env,
				func(e corev1.EnvVar) bool { return e.Name == name }) {
				ps.addf("%s: the sidecar has no variable %s", key, name)
			}
		default:
			ps.addf("%s: a literal secret in the ConfigMap; use a file: or env: "+
				"reference to a Secret", key)
		}
	}
}

// checkFileRef: file is on a Secret volume of the sidecar, and the Secret,
// when the bundle has it, holds the file.
func checkFileRef(b *Bundle, p *Pod, key, file string, ps *problems) {
	m, v := p.MountFor(p.Sidecar, file)
	if m == nil || v == nil || v.Secret == nil {
		ps.addf("%s: %s is not on a Secret volume of the sidecar", key, file)
		return
	}
	if m.SubPath != "" {
		ps.addf("%s: Secret mount %s uses subPath: it is never updated, so a "+
			"rotation would need a restart", key, m.MountPath)
	}
	s := b.Secret(v.Secret.SecretName)
	if s == nil {
		return // managed outside the bundle
	}
	name := strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
	if _, ok := SecretValue(s, name); !ok {
		ps.addf("%s: Secret %s has no key %s (it has %v)", key, s.Name, name, SecretKeys(s))
	}
}

// checkSecurity: non-root, no privilege escalation, read-only root
// filesystem, every capability dropped, in every container.
func checkSecurity(p *Pod, ps *problems) {
	pod := p.Spec.SecurityContext
	podNonRoot := pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	if pod != nil && pod.RunAsUser != nil && *pod.RunAsUser == 0 {
		ps.addf("pod: runAsUser 0")
	}
	for _, c := range p.Containers() {
		sc := c.SecurityContext
		if sc == nil {
			ps.addf("container %s: no securityContext", c.Name)
			continue
		}
		nonRoot := podNonRoot
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		if !nonRoot || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			ps.addf("container %s: must run as non-root", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			ps.addf("container %s: allowPrivilegeEscalation must be false", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			ps.addf("container %s: privileged", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			ps.addf("container %s: readOnlyRootFilesystem must be true", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			ps.addf("container %s: capabilities must drop ALL", c.Name)
		} else if len(sc.Capabilities.Add) > 0 {
			ps.addf("container %s: adds capabilities %v", c.Name, sc.Capabilities.Add)
		}
	}
}

// checkResources: requests and limits of CPU and memory in every container.
func checkResources(p *Pod, ps *problems) {
	for _, c := range p.Containers() {
		r := c.Resources
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := r.Requests[name]; !ok {
				ps.addf("container %s: no %s request", c.Name, name)
			}
			if _, ok := r.Limits[name]; !ok {
				ps.addf("container %s: no %s limit", c.Name, name)
			}
		}
	}
}

// checkServices: a Service selects the pod and sends only to the sidecar's
// public (or tls.http) port.
func checkServices(b *Bundle, p *Pod, ps *problems) {
	podLabels := labels.Set(p.Deployment.Spec.Template.Labels)
	selecting := 0
	for _, s := range b.Services {
		if len(s.Spec.Selector) == 0 ||
			!labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		selecting++
		for _, sp := range s.Spec.Ports {
			if sp.TargetPort.Type == intstr.String {
				ps.addf("Service %s port %d: targetPort %s by name: Services "+
					"resolve a native sidecar's port names only from Kubernetes "+
					"1.32 on; use the number", s.Name, sp.Port, sp.TargetPort.StrVal)
			}
			cp, c := p.ResolvePort(sp.TargetPort)
			if cp == nil || c != p.Sidecar || !isPublicPort(cp.Name) {
				ps.addf("Service %s port %d: targets %s, not the sidecar's "+
					"public port", s.Name, sp.Port, sp.TargetPort.String())
			}
		}
	}
	if selecting == 0 {
		ps.addf("no Service selects the pod")
	}
}

// isPublicPort reports whether a sidecar port may be reached from anywhere.
func isPublicPort(name string) bool { return name == "public" || name == "http" }

// checkNetworkPolicies: a policy isolates the pod's ingress and admits only
// the public ports from anywhere; the admin port only from named peers.
func checkNetworkPolicies(b *Bundle, p *Pod, ps *problems) {
	podLabels := labels.Set(p.Deployment.Spec.Template.Labels)
	selecting := 0
	for _, np := range b.NetworkPolicies {
		sel, err := metaSelector(np)
		if err != nil {
			ps.addf("NetworkPolicy %s: %v", np.Name, err)
			continue
		}
		if !sel.Matches(podLabels) {
			continue
		}
		selecting++
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			ps.addf("NetworkPolicy %s: policyTypes lacks Ingress", np.Name)
		}
		for i, rule := range np.Spec.Ingress {
			checkIngressRule(p, np.Name, i, rule, ps)
		}
	}
	if selecting == 0 {
		ps.addf("no NetworkPolicy selects the pod: the admin port is open to the network")
	}
}

// checkIngressRule checks one ingress rule of a NetworkPolicy.
func checkIngressRule(p *Pod, name string, i int, rule networkingv1.NetworkPolicyIngressRule,
	ps *problems) {
	if len(rule.Ports) == 0 {
		ps.addf("NetworkPolicy %s ingress[%d]: no ports, so every port is open", name, i)
		return
	}
	for _, port := range rule.Ports {
		if port.Port == nil {
			ps.addf("NetworkPolicy %s ingress[%d]: a rule without a port opens all",
				name, i)
			continue
		}
		if port.Port.Type == intstr.String {
			ps.addf("NetworkPolicy %s ingress[%d]: port %s by name: not every "+
				"network plugin resolves a native sidecar's port names; use the number",
				name, i, port.Port.StrVal)
		}
		if port.EndPort != nil {
			ps.addf("NetworkPolicy %s ingress[%d]: port ranges open more than "+
				"the sidecar serves", name, i)
		}
		cp, c := p.ResolvePort(*port.Port)
		switch {
		case cp == nil:
			ps.addf("NetworkPolicy %s ingress[%d]: port %s is no container port",
				name, i, port.Port.String())
		case c == p.Sidecar && isPublicPort(cp.Name):
		case c == p.Sidecar && cp.Name == "admin" && len(rule.From) > 0:
		case c == p.Sidecar && cp.Name == "admin":
			ps.addf("NetworkPolicy %s ingress[%d]: the admin port is open to "+
				"everyone; name the peers in from", name, i)
		default:
			ps.addf("NetworkPolicy %s ingress[%d]: port %s (%s of %s) must stay "+
				"off the network", name, i, port.Port.String(), cp.Name, c.Name)
		}
	}
}

// metaSelector converts a NetworkPolicy's pod selector.
func metaSelector(np *networkingv1.NetworkPolicy) (labels.Selector, error) {
	sel := np.Spec.PodSelector
	set := labels.Set(sel.MatchLabels)
	if len(sel.MatchExpressions) > 0 {
		return nil, fmt.Errorf("podSelector matchExpressions are not checked here")
	}
	return labels.SelectorFromSet(set), nil
}

// OpenPorts returns the names of the pod's ports that a NetworkPolicy
// opens to every source.
func OpenPorts(b *Bundle, p *Pod) []string {
	var open []string
	podLabels := labels.Set(p.Deployment.Spec.Template.Labels)
	for _, np := range b.NetworkPolicies {
		sel, err := metaSelector(np)
		if err != nil || !sel.Matches(podLabels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) > 0 {
				continue
			}
			for _, port := range rule.Ports {
				if port.Port == nil {
					open = append(open, "*")
					continue
				}
				if cp, _ := p.ResolvePort(*port.Port); cp != nil {
					open = append(open, cp.Name)
				} else {
					open = append(open, port.Port.String())
				}
			}
		}
	}
	slices.Sort(open)
	return slices.Compact(open)
}
