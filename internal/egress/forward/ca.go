package forward

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// CAName is the common name of a CA that [LoadOrCreateCA] creates.
const CAName = "zimmer-sidecar local CA"

// Defaults of a CA.
const (
	// caValidity is how long a created CA is valid. An expired CA is refused
	// at load, so the files must then be removed (or replaced) by hand.
	caValidity = 5 * 365 * 24 * time.Hour

	// clockSkew backdates every certificate's NotBefore, so that a client
	// whose clock is a little behind accepts it.
	clockSkew = time.Hour

	// leafValidity is how long a minted leaf is valid; a cached leaf is
	// replaced once half of it has passed.
	leafValidity = 24 * time.Hour

	// leafCacheSize bounds the number of leaves kept in memory.
	leafCacheSize = 1024
)

// CA is a local certificate authority that mints leaf certificates for
// the intercepted hosts. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	signer  crypto.Signer
	created bool

	now    func() time.Time
	leaves *lru.Cache[string, *leaf]

	mu       sync.Mutex
	inflight map[string]*mintCall // guarded by mu: hosts being minted now
	minted   atomic.Int64         // leaves minted so far (tests read it)
}

// LoadOrCreateCA returns the CA stored at certPath and keyPath.
//
// When both files exist they are loaded and checked: the certificate must
// be a CA that may sign certificates, valid now, and the key must be its
// key (PKCS#8, SEC 1 EC or PKCS#1 RSA). Operators may give their own CA
// this way. When neither exists, a CA named [CAName] (ECDSA P-256, valid
// five years, path length 0) is created and written: the certificate as
// PEM with mode 0644 (the app trusts this file), the key as PKCS#8 PEM
// with mode 0600, each through a temporary file renamed into place;
// missing directories are created. When only one of them exists the call
// fails rather than overwrite it. Two processes creating the same CA at
// once may leave a mismatched pair, which the next load reports.
func LoadOrCreateCA(certPath, keyPath string) (*CA, error) {
	certOK, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	keyOK, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certOK && keyOK:
		return loadCA(certPath, keyPath, time.Now)
	case certOK:
		return nil, fmt.Errorf("local ca: certificate %s exists but key %s does not: "+
			"give both files or neither", certPath, keyPath)
	case keyOK:
		return nil, fmt.Errorf("local ca: key %s exists but certificate %s does not: "+
			"give both files or neither", keyPath, certPath)
	}
	return createCA(certPath, keyPath, time.Now)
}

// Certificate returns the CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM, as the app should trust it.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Created reports whether [LoadOrCreateCA] created this CA (rather than
// loading an existing one).
func (ca *CA) Created() bool { return ca.created }

// newCA wraps a checked certificate and its key.
func newCA(cert *x509.Certificate, certPEM []byte, signer crypto.Signer,
	now func() time.Time) (*CA, error) {
	leaves, err := lru.New[string, *leaf](leafCacheSize)
	if err != nil {
		return nil, fmt.Errorf("local ca: leaf cache: %w", err)
	}
	return &CA{
		cert:     cert,
		certPEM:  certPEM,
		signer:   signer,
		now:      now,
		leaves:   leaves,
		inflight: make(map[string]*mintCall),
	}, nil
}

// exists reports whether path names an existing file.
func exists(path string) (bool, error) {
	if path == "" {
		return false, errors.New("local ca: empty path")
	}
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("local ca: %w", err)
}

// loadCA reads and checks an existing pair.
func loadCA(certPath, keyPath string, now func() time.Time) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("local ca: %w", err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("local ca: certificate %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("local ca: %w", err)
	}
	signer, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("local ca: key %s: %w", keyPath, err)
	}
	if err := checkCA(cert, signer, now()); err != nil {
		return nil, fmt.Errorf("local ca: %s and %s: %w", certPath, keyPath, err)
	}
	return newCA(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		signer, now)
}

// parseCert returns the first certificate of a PEM file.
func parseCert(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
		return cert, nil
	}
}

// parseKey returns the first private key of a PEM file.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
}

// checkCA checks that cert is a usable CA at now and that signer is its key.
func checkCA(cert *x509.Certificate, signer crypto.Signer, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("certificate %q is not a CA (basic constraints CA:TRUE missing)",
			cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q may not sign certificates (key usage)",
			cert.Subject.CommonName)
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("certificate %q expired at %s: replace both files "+
			"(or remove them to create a new CA)", cert.Subject.CommonName,
			cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("certificate %q is not valid before %s", cert.Subject.CommonName,
			cert.NotBefore.UTC().Format(time.RFC3339))
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return errors.New("the key does not match the certificate")
	}
	return nil
}

// createCA makes a new CA and writes it to certPath and keyPath.
func createCA(certPath, keyPath string, now func() time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("local ca: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("local ca: %w", err)
	}
	t := now()
	subject := pkix.Name{CommonName: CAName, Organization: []string{"zimmer-sidecar"}}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             t.Add(-clockSkew),
		NotAfter:              t.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("local ca: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("local ca: parse created certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("local ca: encode key: %w", err)
	}

	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("local ca: write key: %w", err)
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		// A key alone would make every later start fail: take it back.
		_ = os.Remove(keyPath)
		return nil, fmt.Errorf("local ca: write certificate: %w", err)
	}
	ca, err := newCA(cert, certPEM, key, now)
	if err != nil {
		return nil, err
	}
	ca.created = true
	return ca, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

// writeAtomic writes data to path with mode through a synced temporary
// file in the same directory renamed over path, so a reader sees the old
// file or the whole new one.
func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}
