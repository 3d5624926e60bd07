package tlsconf

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// challengePrefix is where ACME HTTP-01 challenges are requested (RFC
// 8555, section 8.3).
const challengePrefix = "/.well-known/acme-challenge/"

// serveHTTP answers the plain HTTP listener.
func (m *Manager) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// 1. A challenge is answered or refused here: a redirect would send
	// the CA to a certificate that may not exist yet.
	if strings.HasPrefix(r.URL.Path, challengePrefix) {
		if m.acme != nil && m.acme.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		httpx.Error(w, http.StatusNotFound, "no such ACME challenge")
		return
	}

	// 2. Everything else moves to https, method and body kept (308).
	target, ok := httpsURL(r.Host, r.URL)
	if !ok {
		httpx.Error(w, http.StatusBadRequest, "missing or invalid Host header")
		return
	}
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
}

// httpsURL returns the https URL of the same host (without its port: the
// HTTPS port is the default) and path, or false when host is not a DNS
// name or an IP address.
func httpsURL(host string, u *url.URL) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	switch {
	case host == "":
		return "", false
	case strings.Contains(host, ":"):
		ip := net.ParseIP(strings.Trim(host, "[]"))
		switch {
		case ip == nil:
			return "", false
		case ip.To4() != nil:
			host = ip.String()
		default:
			host = "[" + ip.String() + "]"
		}
	case !isHostName(host):
		return "", false
	}
	target := url.URL{
		Scheme:   "https",
		Host:     host,
		Path:     u.Path,
		RawPath:  u.RawPath,
		RawQuery: strings.ReplaceAll(u.RawQuery, "#", "%23"), // not a fragment
	}
	if !strings.HasPrefix(target.Path, "/") { // "" or "*" (OPTIONS *)
		target.Path = "/" + target.Path
		if target.RawPath != "" {
			target.RawPath = "/" + target.RawPath
		}
	}
	return target.String(), true
}

// isHostName reports whether s holds only letters, digits, dots, hyphens
// and underscores, as a DNS name or an IPv4 address does.
func isHostName(s string) bool {
	for _, r := range s {
		ok := r == '.' || r == '-' || r == '_' || r >= 'a' && r <= 'z' ||
			r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !ok {
			return false
		}
	}
	return len(s) <= 253
}
