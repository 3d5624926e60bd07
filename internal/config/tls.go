package config

import (
	"crypto/tls"
	"crypto/x509"
	"net/mail"
	"net/url"
	"slices"
	"strings"
)

// TLS modes.
const (
	// TLSOff serves plain HTTP: a mesh or an ingress terminates TLS.
	TLSOff = "off"
	// TLSFiles serves a certificate and key read from files, reloaded when
	// they change on disk.
	TLSFiles = "files"
	// TLSACME obtains and renews certificates from an ACME CA.
	TLSACME = "acme"
)

// LetsEncryptCA is the default ACME directory: Let's Encrypt production.
const LetsEncryptCA = "https://acme-v02.api.letsencrypt.org/directory"

// TLS configures TLS termination on the public listener.
type TLS struct {
	// Mode is TLSOff (the default), TLSFiles or TLSACME.
	Mode string `toml:"mode"`
	// CertFile and KeyFile are the PEM certificate chain and private key
	// served in files mode; both are required there and must form a pair.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Names are the DNS names certificates are obtained for in acme mode
	// (at least one; no wildcards, no IP addresses, no duplicates).
	Names []string `toml:"names"`
	// Email is the ACME account's contact; empty registers none.
	Email string `toml:"email"`
	// CA is the ACME directory URL, an absolute https URL.
	CA string `toml:"ca"`
	// CARoot is a PEM file of certificates trusted for the CA's own HTTPS,
	// for a private CA; empty trusts the system roots.
	CARoot string `toml:"ca_root"`
	// Storage is the directory holding ACME accounts, certificates and
	// locks. It must persist across restarts and be shared by replicas.
	Storage string `toml:"storage"`
	// HTTP is the host:port of the plain HTTP listener that answers ACME
	// HTTP-01 challenges and redirects everything else to HTTPS; empty runs
	// none (acme mode then uses TLS-ALPN-01 only).
	HTTP string `toml:"http"`
}

// defaultTLS is the starting value of the [tls] section.
func defaultTLS() TLS {
	return TLS{Mode: TLSOff, Names: []string{}, CA: LetsEncryptCA, Storage: "./data/acme"}
}

// tls checks the [tls] section against the mode it selects. Keys the mode
// does not use are not checked. l is the already-checked [listen] section.
func (v *validator) tlsSection(t *TLS, l *Listen) {
	switch t.Mode {
	case TLSOff:
		if t.HTTP != "" {
			v.addf("tls.http", `needs tls.mode "files" or "acme": with TLS off `+
				`there is nothing to redirect to (got %q)`, t.HTTP)
		}
		return
	case TLSFiles:
		v.tlsFiles(t)
	case TLSACME:
		v.tlsACME(t)
	default:
		v.addf("tls.mode", `must be "off", "files" or "acme" (got %q)`, t.Mode)
		return
	}
	if t.HTTP == "" || !v.hostPort("tls.http", t.HTTP) {
		return
	}
	for _, other := range []struct{ key, addr string }{
		{"listen.public", l.Public}, {"listen.admin", l.Admin},
	} {
		if other.addr != "" && sameListener(t.HTTP, other.addr) {
			v.addf("tls.http", "must differ from %s (both %q)", other.key, t.HTTP)
		}
	}
}

// tlsFiles checks that the certificate and key files load as a pair. The
// messages never show the files' contents.
func (v *validator) tlsFiles(t *TLS) {
	certPEM := v.tlsFile("tls.cert_file", t.CertFile, "/etc/tls/tls.crt")
	keyPEM := v.tlsFile("tls.key_file", t.KeyFile, "/etc/tls/tls.key")
	if certPEM == nil || keyPEM == nil {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		v.addf("tls.cert_file", "and tls.key_file do not load as a certificate "+
			"and its key: %v", err)
	}
}

// tlsFile reads a required file, reporting a problem and returning nil
// when it is unset or unreadable. Without a reader it checks nothing.
func (v *validator) tlsFile(p, name, example string) []byte {
	if strings.TrimSpace(name) == "" {
		v.addf(p, `is required in files mode, like %q`, example)
		return nil
	}
	if v.readFile == nil {
		return nil
	}
	data, err := v.readFile(name)
	if err != nil {
		v.addf(p, "cannot be read: %v", err)
		return nil
	}
	return data
}

// tlsACME checks names, account and storage of acme mode.
func (v *validator) tlsACME(t *TLS) {
	if len(t.Names) == 0 {
		v.addf("tls.names", `needs at least one DNS name in acme mode, like `+
			`["automation.example.com"]`)
	}
	for i, n := range t.Names {
		p := joinIndex("tls.names", i)
		if msg := checkDNSName(n); msg != "" {
			v.addf(p, "%s (got %q)", msg, n)
			continue
		}
		if first := slices.Index(t.Names, n); first < i {
			v.addf(p, "%q repeats tls.names[%d]", n, first)
		}
	}
	if t.Email != "" {
		if a, err := mail.ParseAddress(t.Email); err != nil || a.Address != t.Email {
			v.addf("tls.email", `must be a plain address like "ops@example.com" (got %q)`,
				t.Email)
		}
	}
	if u, err := url.Parse(t.CA); err != nil || u.Scheme != "https" || u.Host == "" ||
		u.User != nil {
		v.addf("tls.ca", "must be the absolute https:// URL of an ACME directory, "+
			"like %q (got %q)", LetsEncryptCA, t.CA)
	}
	if t.CARoot != "" {
		v.caRoot(t.CARoot)
	}
	if strings.TrimSpace(t.Storage) == "" {
		v.addf("tls.storage", `is required in acme mode, like "./data/acme"`)
	}
	if t.HTTP == "" {
		v.warnf("tls.http", "is empty: only the TLS-ALPN-01 challenge can be "+
			"answered, so the CA must reach listen.public on port 443")
	}
}

// caRoot checks that the file holds at least one PEM certificate.
func (v *validator) caRoot(name string) {
	const p = "tls.ca_root"
	if v.readFile == nil {
		return
	}
	data, err := v.readFile(name)
	if err != nil {
		v.addf(p, "cannot be read: %v", err)
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		v.addf(p, "holds no PEM certificate (%s)", name)
	}
}

// checkDNSName returns why n cannot be named in an HTTP-01 or TLS-ALPN-01
// certificate order, or "" when it can.
func checkDNSName(n string) string {
	switch {
	case strings.Contains(n, "*"):
		return "must not be a wildcard: HTTP-01 and TLS-ALPN-01 cannot prove one"
	case len(n) == 0 || len(n) > 253 || strings.HasSuffix(n, "."):
		return `must be a DNS name like "automation.example.com"`
	case strings.Trim(n, "0123456789.:") == "" || strings.Contains(n, ":"):
		return "must be a DNS name, not an IP address"
	case !strings.Contains(n, "."):
		return `must be a fully qualified DNS name like "automation.example.com"`
	}
	for label := range strings.SplitSeq(n, ".") {
		if !isDNSLabel(label) {
			return `has an invalid label: use letters, digits and "-" only`
		}
	}
	return ""
}

// isDNSLabel reports whether s is 1 to 63 letters, digits or hyphens,
// neither starting nor ending with a hyphen.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !ok {
			return false
		}
	}
	return true
}
