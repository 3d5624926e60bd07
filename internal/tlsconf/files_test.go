package tlsconf

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const filesName = "files.zimmer.test"

// startFiles builds and starts a files-mode Manager over sd and serves
// /health with it on a loopback port, returning the port's address.
func startFiles(t *testing.T, certFile, keyFile string, ev *events) string {
	t.Helper()
	m, err := New(Options{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile,
		ReloadInterval: -1, OnEvent: ev.hook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	serve(t, ln, m.TLSConfig(), healthHandler())
	return ln.Addr().String()
}

// TestFilesRotation swaps the pair like a Kubernetes Secret update: the
// next handshake gets the new serial, a connection opened before keeps
// working, and a broken pair leaves the last good one in service.
func TestFilesRotation(t *testing.T) {
	t.Parallel()
	a := newTestCert(t, 101, filesName)
	b := newTestCert(t, 102, filesName)
	c := newTestCert(t, 103, filesName)
	roots := pool(a, b, c)
	sd := newSecretDir(t, a)
	ev := newEvents()
	addr := startFiles(t, sd.certFile(), sd.keyFile(), ev)

	// 1. Pair A is served; a keep-alive HTTP/2 connection is opened.
	if got := servedSerial(t, addr, filesName, roots); got != a.serial {
		t.Fatalf("first handshake: got serial %d, want %d", got, a.serial)
	}
	early := client(roots, addr)
	if resp := getHealth(t, early, filesName); resp.ProtoMajor != 2 {
		t.Fatalf("got %s, want HTTP/2", resp.Proto)
	}

	// 2. Swap to B: the next handshake gets B.
	sd.put(b.certPEM, b.keyPEM)
	if e := ev.next(t, CertLoaded); !slices.Contains(e.Names, filesName) ||
		!e.NotAfter.Equal(b.cert.NotAfter) {
		t.Errorf("got event %+v, want B's names and expiry", e)
	}
	if got := servedSerial(t, addr, filesName, roots); got != b.serial {
		t.Fatalf("after the swap: got serial %d, want %d", got, b.serial)
	}

	// 3. The connection opened before the swap still answers, still on A.
	resp := getHealth(t, early, filesName)
	if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != a.serial {
		t.Errorf("early connection: got serial %d, want %d (the same connection)",
			got, a.serial)
	}

	// 4. A broken pair (C's certificate, A's key) is refused; B stays.
	sd.put(c.certPEM, a.keyPEM)
	e := ev.next(t, CertLoadFailed)
	if e.Err == nil || !strings.Contains(e.Err.Error(), "private key does not match") {
		t.Errorf("got failure %v, want a key mismatch", e.Err)
	}
	if strings.Contains(e.Err.Error(), string(a.keyPEM[30:60])) {
		t.Errorf("failure shows key material: %v", e.Err)
	}
	if got := servedSerial(t, addr, filesName, roots); got != b.serial {
		t.Errorf("after a broken pair: got serial %d, want %d", got, b.serial)
	}

	// 5. A good pair after the broken one is served.
	sd.put(c.certPEM, c.keyPEM)
	ev.next(t, CertLoaded)
	if got := servedSerial(t, addr, filesName, roots); got != c.serial {
		t.Errorf("after recovery: got serial %d, want %d", got, c.serial)
	}
}

// TestFilesRenamedOver replaces plain files by renaming new ones over
// them, as tools other than the kubelet do.
func TestFilesRenamedOver(t *testing.T) {
	t.Parallel()
	a := newTestCert(t, 201, filesName)
	b := newTestCert(t, 202, filesName)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, a.certPEM)
	writeFile(t, keyFile, a.keyPEM)
	ev := newEvents()
	addr := startFiles(t, certFile, keyFile, ev)

	// Two renames: between them the pair may not match, which reports a
	// failure, and the second rename loads B.
	writeFile(t, keyFile+".tmp", b.keyPEM)
	writeFile(t, certFile+".tmp", b.certPEM)
	for _, f := range []string{keyFile, certFile} {
		if err := os.Rename(f+".tmp", f); err != nil {
			t.Fatal(err)
		}
	}
	ev.next(t, CertLoaded)
	if got := servedSerial(t, addr, filesName, pool(a, b)); got != b.serial {
		t.Errorf("got serial %d, want %d", got, b.serial)
	}
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFilesNewRefusesBrokenPair checks that New fails when nothing could
// be served, without showing key material.
func TestFilesNewRefusesBrokenPair(t *testing.T) {
	t.Parallel()
	a := newTestCert(t, 1, filesName)
	b := newTestCert(t, 2, filesName)
	dir := t.TempDir()
	files := map[string][]byte{"a.crt": a.certPEM, "b.key": b.keyPEM, "junk": []byte("junk")}
	for name, data := range files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	tests := []struct {
		name, cert, key, want string
	}{
		{"mismatch", "a.crt", "b.key", "private key does not match"},
		{"missing key", "a.crt", "none.key", "read key"},
		{"missing cert", "none.crt", "b.key", "read certificate"},
		{"not pem", "junk", "b.key", "failed to find any PEM data"},
		{"unset", "", "", "needs a certificate and a key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{Mode: ModeFiles}
			if tt.cert != "" {
				opts.CertFile, opts.KeyFile = filepath.Join(dir, tt.cert),
					filepath.Join(dir, tt.key)
			}
			_, err := New(opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if bytes.Contains([]byte(err.Error()), b.keyPEM[30:60]) {
				t.Errorf("error shows key material: %v", err)
			}
		})
	}
}

// TestStartTwiceAndClose checks the lifecycle errors.
func TestStartTwiceAndClose(t *testing.T) {
	t.Parallel()
	sd := newSecretDir(t, newTestCert(t, 1, filesName))
	m, err := New(Options{Mode: ModeFiles, CertFile: sd.certFile(), KeyFile: sd.keyFile()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: got %v, want ErrStarted", err)
	}
	if !m.Ready() || m.WaitReady(t.Context()) != nil {
		t.Error("files mode is not ready after New")
	}
	for range 2 {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := m.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: got %v, want ErrClosed", err)
	}
	if err := m.WaitReady(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitReady after Close: got %v, want ErrClosed", err)
	}
	if _, err := New(Options{Mode: "off"}); err == nil {
		t.Error("New accepted mode off")
	}
}

// TestNewACMEOptions checks what acme mode requires before contacting
// anyone.
func TestNewACMEOptions(t *testing.T) {
	t.Parallel()
	ok := Options{Mode: ModeACME, Names: []string{"a.zimmer.test"},
		StorageDir: t.TempDir(), HTTPAddr: "127.0.0.1:80"}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no names", func(o *Options) { o.Names = nil }, "at least one name"},
		{"no storage", func(o *Options) { o.StorageDir = "" }, "storage directory"},
		{"no address", func(o *Options) { o.HTTPAddr = "" }, "an HTTP or a TLS address"},
		{"unbound port", func(o *Options) { o.HTTPAddr = "127.0.0.1:0" }, "bound port"},
		{"bad address", func(o *Options) { o.TLSAddr = "443" }, "listener address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := ok
			tt.edit(&opts)
			_, err := New(opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
	m, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestReadRoots reads a PEM bundle and refuses a file without one.
func TestReadRoots(t *testing.T) {
	t.Parallel()
	c := newTestCert(t, 5, "ca.zimmer.test")
	dir := t.TempDir()
	good, junk := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "junk.pem")
	writeFile(t, good, c.certPEM)
	writeFile(t, junk, []byte("junk"))
	roots, err := ReadRoots(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cert.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Errorf("pool does not trust the file's certificate: %v", err)
	}
	for _, f := range []string{junk, filepath.Join(dir, "none.pem")} {
		if _, err := ReadRoots(f); err == nil {
			t.Errorf("ReadRoots(%s) succeeded", f)
		}
	}
}
