package forward

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateCACreatesThenReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "ca")
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")

	ca, err := LoadOrCreateCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Created() {
		t.Error("Created: got false for a new CA, want true")
	}
	c := ca.Certificate()
	if c.Subject.CommonName != CAName {
		t.Errorf("common name: got %q, want %q", c.Subject.CommonName, CAName)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("constraints: IsCA %v valid %v MaxPathLen %d zero %v, "+
			"want a CA with path length 0",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("key usage %v lacks cert sign", c.KeyUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key: got %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 4*365*24*time.Hour {
		t.Errorf("validity: got %v, want years", life)
	}
	for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s mode: got %o, want %o", filepath.Base(path), got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want the 2 files (no temporaries left)",
			len(entries))
	}
	onDisk, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("CertPEM differs from the certificate file")
	}

	again, err := LoadOrCreateCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created() {
		t.Error("Created: got true on reuse, want false")
	}
	if !again.Certificate().Equal(c) {
		t.Error("reuse: got a different certificate, want the stored one")
	}
}

func TestLoadOrCreateCAErrors(t *testing.T) {
	good := t.TempDir()
	goodCert, goodKey := filepath.Join(good, "ca.pem"), filepath.Join(good, "ca-key.pem")
	if _, err := LoadOrCreateCA(goodCert, goodKey); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	otherKey := filepath.Join(other, "ca-key.pem")
	if _, err := LoadOrCreateCA(filepath.Join(other, "ca.pem"), otherKey); err != nil {
		t.Fatal(err)
	}
	expired := t.TempDir()
	past := func() time.Time { return time.Now().Add(-6 * 365 * 24 * time.Hour) }
	if _, err := createCA(filepath.Join(expired, "ca.pem"),
		filepath.Join(expired, "ca-key.pem"), past); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		cert, key func(dir string) string // write the file, return its path
		want      []string                // substrings of the error
	}{
		{
			name: "cert without key",
			cert: copyFile(t, goodCert), key: missing,
			want: []string{"ca.pem exists but key", "does not"},
		},
		{
			name: "key without cert",
			cert: missing, key: copyFile(t, goodKey),
			want: []string{"key", "exists but certificate", "does not"},
		},
		{
			name: "key of another CA",
			cert: copyFile(t, goodCert), key: copyFile(t, otherKey),
			want: []string{"ca.pem", "does not match"},
		},
		{
			name: "not a CA",
			cert: writeSelfSigned(t, false, x509.KeyUsageDigitalSignature, time.Now()),
			key:  keyFile(t),
			want: []string{"is not a CA"},
		},
		{
			name: "CA that may not sign certificates",
			cert: writeSelfSigned(t, true, x509.KeyUsageDigitalSignature, time.Now()),
			key:  keyFile(t),
			want: []string{"may not sign certificates"},
		},
		{
			name: "expired",
			cert: copyFile(t, filepath.Join(expired, "ca.pem")),
			key:  copyFile(t, filepath.Join(expired, "ca-key.pem")),
			want: []string{"expired at"},
		},
		{
			name: "cert not PEM",
			cert: writeBytes(t, "ca.pem", []byte("not a certificate")), key: copyFile(t, goodKey),
			want: []string{"ca.pem", "no PEM CERTIFICATE block"},
		},
		{
			name: "key not PEM",
			cert: copyFile(t, goodCert), key: writeBytes(t, "ca-key.pem", []byte("nope")),
			want: []string{"ca-key.pem", "no PEM private key block"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certPath, keyPath := tt.cert(dir), tt.key(dir)
			before := snapshot(t, dir)
			_, err := LoadOrCreateCA(certPath, keyPath)
			if err == nil {
				t.Fatal("got no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want it to contain %q", err, w)
				}
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("files changed: got %s, want %s", after, before)
			}
		})
	}
}

func TestLoadOrCreateCAGivenRSA(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := caTemplate(true, x509.KeyUsageCertSign, time.Now())
	tmpl.Subject.CommonName = "operator CA"
	certPath := filepath.Join(dir, "operator.pem")
	writeCert(t, certPath, tmpl, key.Public(), key)
	keyPath := filepath.Join(dir, "operator.key")
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	// A comment block before the key must be skipped.
	data := append(pem.EncodeToMemory(&pem.Block{Type: "COMMENT", Bytes: []byte("x")}),
		pem.EncodeToMemory(block)...)
	if err := os.WriteFile(keyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}

	ca, err := LoadOrCreateCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Created() || ca.Certificate().Subject.CommonName != "operator CA" {
		t.Fatalf("got created=%v %q, want the given CA", ca.Created(),
			ca.Certificate().Subject.CommonName)
	}
	leaf, err := ca.LeafFor("api.openai.com")
	if err != nil {
		t.Fatal(err)
	}
	verifyLeaf(t, ca, leaf.Leaf, "api.openai.com")
}

// missing returns a path where no file exists.
func missing(dir string) string { return filepath.Join(dir, "absent.pem") }

// copyFile returns a writer of a copy of src into a test's directory.
func copyFile(t *testing.T, src string) func(string) string {
	return func(dir string) string {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.Base(src))
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return dst
	}
}

// writeBytes returns a writer of data as name.
func writeBytes(t *testing.T, name string, data []byte) func(string) string {
	return func(dir string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// testKey is the key of the self-signed certificates of writeSelfSigned.
var testKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// keyFile returns a writer of testKey in PKCS#8.
func keyFile(t *testing.T) func(string) string {
	der, err := x509.MarshalPKCS8PrivateKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return writeBytes(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// writeSelfSigned returns a writer of a certificate of testKey.
func writeSelfSigned(t *testing.T, isCA bool, usage x509.KeyUsage,
	now time.Time) func(string) string {
	return func(dir string) string {
		p := filepath.Join(dir, "cert.pem")
		writeCert(t, p, caTemplate(isCA, usage, now), testKey.Public(), testKey)
		return p
	}
}

// caTemplate is a self-signed template valid around now.
func caTemplate(isCA bool, usage x509.KeyUsage, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour * 24 * 30),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
}

// writeCert self-signs tmpl and writes it as PEM to path.
func writeCert(t *testing.T, path string, tmpl *x509.Certificate, pub crypto.PublicKey,
	signer crypto.Signer) {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot lists dir's files and sizes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(e.Name() + ":" + info.Mode().String() + ";")
	}
	return b.String()
}

// verifyLeaf checks that leaf chains to ca for host and serves TLS servers.
func verifyLeaf(t *testing.T, ca *CA, leaf *x509.Certificate, host string) {
	t.Helper()
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:   host,
		Roots:     roots(ca),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatalf("leaf for %s: %v", host, err)
	}
}
