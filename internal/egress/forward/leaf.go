package forward

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// leaf is a minted certificate and the time it should be replaced.
type leaf struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// mintCall is one host's mint in progress; waiters block on done.
type mintCall struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// LeafFor returns a certificate for host (a DNS name or an IP address,
// without a port) signed by the CA: an ECDSA P-256 key, the host as its
// only subject alternative name, valid for a day and never past the CA.
// Leaves are cached per host (at most 1,024 hosts, least recently used
// first out) and replaced once half their validity has passed. Concurrent
// calls for the same host wait for one mint.
func (ca *CA) LeafFor(host string) (*tls.Certificate, error) {
	host, err := leafHost(host)
	if err != nil {
		return nil, err
	}
	if c, ok := ca.cached(host); ok {
		return c, nil
	}

	// Join a mint in progress, or become the one that mints.
	ca.mu.Lock()
	if c, ok := ca.cached(host); ok {
		ca.mu.Unlock()
		return c, nil
	}
	if call, ok := ca.inflight[host]; ok {
		ca.mu.Unlock()
		<-call.done
		return call.cert, call.err
	}
	call := &mintCall{done: make(chan struct{})}
	ca.inflight[host] = call
	ca.mu.Unlock()

	// Mint, publish to the cache, then release the waiters.
	now := ca.now()
	call.cert, call.err = ca.mint(host, now)
	if call.err == nil {
		renew := now.Add(leafValidity / 2)
		ca.leaves.Add(host, &leaf{cert: call.cert, renewAt: renew})
	}
	ca.mu.Lock()
	delete(ca.inflight, host)
	ca.mu.Unlock()
	close(call.done)
	return call.cert, call.err
}

// cached returns host's leaf when it is cached and not due for renewal.
func (ca *CA) cached(host string) (*tls.Certificate, bool) {
	l, ok := ca.leaves.Get(host)
	if !ok || !ca.now().Before(l.renewAt) {
		return nil, false
	}
	return l.cert, true
}

// mint signs a new leaf for host.
func (ca *CA) mint(host string, now time.Time) (*tls.Certificate, error) {
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("local ca: expired at %s",
			ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: generate key: %w", host, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("leaf %s: %w", host, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              minTime(now.Add(leafValidity), ca.cert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.signer)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: sign: %w", host, err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: parse: %w", host, err)
	}
	ca.minted.Add(1)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed}, nil
}

// leafHost normalizes a host name for a leaf: lowercase, no trailing dot,
// IPv6 literals without brackets, IP addresses in canonical form.
func leafHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if err := checkHost(h); err != nil {
		return "", fmt.Errorf("leaf: %w", err)
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.String(), nil
	}
	return h, nil
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
