package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// testPair returns a self-signed certificate and its key, PEM encoded.
func testPair(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "automation.example.com"},
		DNSNames:     []string{"automation.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certPEM, keyPEM
}

// TestTLSRules checks each [tls] rule on its own: the one problem it
// raises, at its key path and line.
func TestTLSRules(t *testing.T) {
	t.Parallel()
	certA, keyA := testPair(t)
	_, keyB := testPair(t)
	files := map[string]string{
		"/tls/a.crt": certA, "/tls/a.key": keyA, "/tls/b.key": keyB,
		"/tls/junk.pem": "not pem", "/tls/root.pem": certA,
	}
	const acme = "[tls]\nmode = \"acme\"\nhttp = \":80\"\n"
	tests := []struct {
		name string
		doc  string // appended to base: its first line is line 3
		path string
		line int
		want string
	}{
		{"mode", "[tls]\nmode = \"on\"\n", "tls.mode", 4, `(got "on")`},
		{"http with tls off", "[tls]\nhttp = \":80\"\n", "tls.http", 4, `needs tls.mode`},
		{"cert missing", "[tls]\nmode = \"files\"\nkey_file = \"/tls/a.key\"\n",
			"tls.cert_file", 3, "is required in files mode"},
		{"key unreadable", "[tls]\nmode = \"files\"\ncert_file = \"/tls/a.crt\"\n" +
			"key_file = \"/tls/none.key\"\n", "tls.key_file", 6, "cannot be read"},
		{"pair mismatch", "[tls]\nmode = \"files\"\ncert_file = \"/tls/a.crt\"\n" +
			"key_file = \"/tls/b.key\"\n", "tls.cert_file", 5, "do not load as a certificate"},
		{"no names", acme, "tls.names", 3, "at least one DNS name"},
		{"wildcard", acme + "names = [\"*.example.com\"]\n",
			"tls.names[0]", 6, "must not be a wildcard"},
		{"ip address", acme + "names = [\"192.0.2.1\"]\n", "tls.names[0]", 6, "not an IP"},
		{"ipv6 address", acme + "names = [\"::1\"]\n", "tls.names[0]", 6, "not an IP"},
		{"single label", acme + "names = [\"localhost\"]\n",
			"tls.names[0]", 6, "fully qualified"},
		{"bad label", acme + "names = [\"a_b.example.com\"]\n",
			"tls.names[0]", 6, "invalid label"},
		{"duplicate", acme + "names = [\"a.example.com\", \"a.example.com\"]\n",
			"tls.names[1]", 6, "repeats tls.names[0]"},
		{"email", acme + "names = [\"a.example.com\"]\nemail = \"Ops <ops@example.com>\"\n",
			"tls.email", 7, "plain address"},
		{"ca http", acme + "names = [\"a.example.com\"]\nca = \"http://127.0.0.1/dir\"\n",
			"tls.ca", 7, "absolute https:// URL"},
		{"ca_root junk", acme + "names = [\"a.example.com\"]\nca_root = \"/tls/junk.pem\"\n",
			"tls.ca_root", 7, "holds no PEM certificate"},
		{"ca_root missing", acme + "names = [\"a.example.com\"]\nca_root = \"/tls/no.pem\"\n",
			"tls.ca_root", 7, "cannot be read"},
		{"storage", acme + "names = [\"a.example.com\"]\nstorage = \" \"\n",
			"tls.storage", 7, "is required in acme mode"},
		{"http bad", "[tls]\nmode = \"acme\"\nnames = [\"a.example.com\"]\nhttp = \"80\"\n",
			"tls.http", 6, "must be host:port"},
		{"http same as public", "[listen]\npublic = \":8443\"\n[tls]\nmode = \"acme\"\n" +
			"names = [\"a.example.com\"]\nhttp = \"127.0.0.1:8443\"\n",
			"tls.http", 8, "must differ from listen.public"},
		{"http same as admin", acme + "names = [\"a.example.com\"]\n[listen]\n" +
			"admin = \"127.0.0.1:80\"\n", "tls.http", 5, "must differ from listen.admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, base+tt.doc, nil, files)
			if err == nil {
				t.Fatal("Parse succeeded, want one problem")
			}
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(ps), err)
			}
			checkProblem(t, ps[0], tt.path, tt.line, tt.want)
		})
	}
}

// TestTLSValid checks valid sections of each mode and what they yield.
func TestTLSValid(t *testing.T) {
	t.Parallel()
	cert, key := testPair(t)
	files := map[string]string{"/tls/tls.crt": cert, "/tls/tls.key": key, "/ca.pem": cert}

	c, err := parse(t, base, nil, files)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.TLS; got.Mode != TLSOff || got.CA != LetsEncryptCA ||
		got.Storage != "./data/acme" || got.HTTP != "" {
		t.Errorf("default tls: got %+v", got)
	}

	doc := base + "[tls]\nmode = \"files\"\ncert_file = \"/tls/tls.crt\"\n" +
		"key_file = \"/tls/tls.key\"\nhttp = \":80\"\n"
	if c, err = parse(t, doc, nil, files); err != nil {
		t.Fatalf("files mode: %v", err)
	}
	if c.TLS.CertFile != "/tls/tls.crt" || c.TLS.KeyFile != "/tls/tls.key" {
		t.Errorf("files mode: got %+v", c.TLS)
	}

	doc = base + "[tls]\nmode = \"acme\"\nemail = \"ops@example.com\"\n" +
		"ca = \"https://127.0.0.1:14000/dir\"\nca_root = \"/ca.pem\"\nhttp = \":80\"\n"
	env := []string{"ZIMMER_SIDECAR_TLS__NAMES=a.example.com,b.example.com"}
	if c, err = parse(t, doc, env, files); err != nil {
		t.Fatalf("acme mode: %v", err)
	}
	if want := []string{"a.example.com", "b.example.com"}; !slices.Equal(c.TLS.Names, want) {
		t.Errorf("names from the environment: got %q, want %q", c.TLS.Names, want)
	}
	if ws := c.Warnings(); slices.ContainsFunc(ws, func(p Problem) bool {
		return strings.HasPrefix(p.Path, "tls")
	}) {
		t.Errorf("acme with an http listener: got warnings %v, want none for tls", ws)
	}
}

// TestTLSWarnsWithoutHTTP checks that acme without the plain listener
// warns that only TLS-ALPN-01 is left.
func TestTLSWarnsWithoutHTTP(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[tls]\nmode = \"acme\"\nnames = [\"a.example.com\"]\n")
	i := slices.IndexFunc(c.Warnings(), func(p Problem) bool { return p.Path == "tls.http" })
	if i < 0 {
		t.Fatalf("got warnings %v, want one for tls.http", c.Warnings())
	}
	if msg := c.Warnings()[i].Message; !strings.Contains(msg, "TLS-ALPN-01") {
		t.Errorf("got warning %q, want it to name TLS-ALPN-01", msg)
	}
}

// TestTLSFilesNeverShowKey checks that a broken key file's contents stay
// out of every problem.
func TestTLSFilesNeverShowKey(t *testing.T) {
	t.Parallel()
	cert, _ := testPair(t)
	const secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n" +
		"-----END PRIVATE KEY-----\n"
	files := map[string]string{"/c.pem": cert, "/k.pem": secret}
	doc := base + "[tls]\nmode = \"files\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n"
	_, err := parse(t, doc, nil, files)
	if err == nil {
		t.Fatal("Parse succeeded with a broken key")
	}
	if strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("problem shows the key file's contents: %v", err)
	}
}
