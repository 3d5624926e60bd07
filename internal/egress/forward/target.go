package forward

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// target is a normalized CONNECT destination.
type target struct {
	host       string // lowercase, no trailing dot, IPv6 without brackets
	port       string // decimal, 1-65535
	addr       string // host:port, the key of the route tables
	hostHeader string // r.Host for intercepted requests: host, or addr off port 443
}

// parseTarget normalizes "host" (port 443) or "host:port".
func parseTarget(s string) (target, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "443"
	}
	host = strings.TrimSuffix(host, ".")
	if err := checkHost(host); err != nil {
		return target{}, err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 ||
		strconv.Itoa(n) != port {
		return target{}, fmt.Errorf("invalid port %q", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	}
	t := target{host: host, port: port, addr: net.JoinHostPort(host, port)}
	t.hostHeader = t.addr
	if port == "443" {
		t.hostHeader = host
		if strings.Contains(host, ":") {
			t.hostHeader = "[" + host + "]"
		}
	}
	return t, nil
}

// checkHost accepts a DNS name (letters, digits, '-', '_', '.') or an IP
// address without a zone.
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return fmt.Errorf("host %q: zones are not supported", h)
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %q: longer than 253 bytes", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q: bad label", h)
		}
		for _, c := range label {
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("host %q: invalid character %q", h, c)
			}
		}
	}
	return nil
}

// matchesHost reports whether a request's Host names t: the same host,
// and t's port or no port when t's port is 443.
func (t target) matchesHost(hostHeader string) bool {
	got, err := parseTarget(hostHeader)
	return err == nil && got.addr == t.addr
}
