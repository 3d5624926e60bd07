package validate

import (
	"net/url"

	corev1 "k8s.io/api/core/v1"
)

// The variables through which the OpenAI clients (Python and Node) take
// their base URL and key, and the proxy variable of forward-proxy mode.
const (
	envBaseURL    = "OPENAI_BASE_URL"
	envAPIKey     = "OPENAI_API_KEY"
	envHTTPSProxy = "HTTPS_PROXY"
)

// checkEgress: with the egress on, an app container sends its OpenAI
// calls there (OPENAI_BASE_URL to the base-URL listener, or HTTPS_PROXY
// to the forward proxy) and holds no real key; with it off, no app points
// its OpenAI client at a loopback address nothing serves. The forward
// proxy's CA is held to checkProxyCA.
func checkEgress(p *Pod, ps *problems) {
	c := p.Config
	var base, proxy string
	if c.EgressListen != "" {
		base = "http://" + c.EgressListen + "/v1"
	}
	if c.EgressProxyListen != "" {
		proxy = "http://" + c.EgressProxyListen
	}
	used := false
	for _, app := range p.Apps {
		if v, ok := plainEnv(app, envBaseURL); ok {
			switch {
			case base == "" && pointsAtLoopback(v):
				ps.addf("app %s: %s %q is the pod's loopback, but egress.listen is "+
					"not set: nothing serves it", app.Name, envBaseURL, v)
			case base != "" && v != base:
				ps.addf("app %s: %s is %q, want %q: the app's OpenAI calls would "+
					"not go through the egress", app.Name, envBaseURL, v, base)
			case base != "":
				used = true
			}
		}
		if v, ok := plainEnv(app, envHTTPSProxy); ok && proxy != "" && v == proxy {
			used = true
		}
		if e := envVar(app, envAPIKey); e != nil && e.ValueFrom != nil && c.EgressEnabled() {
			ps.addf("app %s: %s comes from %s: with the egress on, the app needs "+
				"only a placeholder (the sidecar drops it); keep the real keys "+
				"with the sidecar", app.Name, envAPIKey, valueSource(e.ValueFrom))
		}
	}
	if c.EgressEnabled() && !used {
		ps.addf("the egress is on, but no app container sends its OpenAI calls "+
			"there (%s=%q or %s=%q)", envBaseURL, base, envHTTPSProxy, proxy)
	}
	if c.EgressProxyListen != "" {
		checkProxyCA(p, ps)
	}
}

// checkProxyCA: the forward proxy's CA files are on writable volumes of
// the sidecar that live equally long (the sidecar creates both when both
// are missing and refuses to start with one alone); an app container
// mounts the certificate's volume to trust it, and none mounts the key's.
func checkProxyCA(p *Pod, ps *problems) {
	certVol := caVolume(p, "egress.proxy.ca_cert", p.Config.EgressCACert, ps)
	keyVol := caVolume(p, "egress.proxy.ca_key", p.Config.EgressCAKey, ps)
	if certVol == nil || keyVol == nil {
		return
	}
	if volumeSource(certVol) != volumeSource(keyVol) {
		ps.addf("egress.proxy.ca_cert is on volume %s (%s) and ca_key on %s (%s): "+
			"when one outlives the other the sidecar finds one file alone and "+
			"refuses to start", certVol.Name, volumeSource(certVol), keyVol.Name,
			volumeSource(keyVol))
	}
	trusted := false
	for _, app := range p.Apps {
		for _, m := range app.VolumeMounts {
			if m.Name == keyVol.Name {
				ps.addf("app %s mounts volume %s, which holds egress.proxy.ca_key: "+
					"the app could mint certificates its own clients trust",
					app.Name, keyVol.Name)
			}
			if m.Name == certVol.Name {
				trusted = true
			}
		}
	}
	if !trusted {
		ps.addf("no app container mounts volume %s with egress.proxy.ca_cert: "+
			"the app cannot trust the proxy's certificates", certVol.Name)
	}
}

// caVolume returns the volume on which the sidecar writes a CA file, or
// nil after reporting why it cannot.
func caVolume(p *Pod, key, file string, ps *problems) *corev1.Volume {
	m, v := p.MountFor(p.Sidecar, file)
	switch {
	case m == nil || v == nil:
		ps.addf("%s %s is on no volume of the sidecar (the root filesystem is "+
			"read-only)", key, file)
		return nil
	case m.ReadOnly:
		ps.addf("%s %s is on the read-only mount %s: the sidecar creates it",
			key, file, m.MountPath)
		return nil
	}
	return v
}

// envVar returns c's variable name, or nil.
func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// plainEnv returns the value c's variable name is given in the manifest
// itself (not from a Secret or a field).
func plainEnv(c *corev1.Container, name string) (string, bool) {
	e := envVar(c, name)
	if e == nil || e.ValueFrom != nil {
		return "", false
	}
	return e.Value, true
}

// valueSource names where a valueFrom variable comes from.
func valueSource(v *corev1.EnvVarSource) string {
	if v.SecretKeyRef != nil {
		return "Secret " + v.SecretKeyRef.Name
	}
	return "a valueFrom reference"
}

// pointsAtLoopback reports whether the URL names a loopback host.
func pointsAtLoopback(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Host != "" && isLoopback(u.Hostname())
}
