package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoad reads a real file and a real secret file, and names the file in
// problems.
func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte("disk-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.toml")
	doc := base + "[auth]\ntokens = [\"file:" + secret + "\"]\n"
	if err := os.WriteFile(good, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := c.Auth.Tokens[0]; got.Value != "disk-token" || got.Source != "file:"+secret {
		t.Errorf("got token from %s, want the file's trimmed contents", got.Source)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(base+"[log]\nlevel = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad, nil)
	if want := bad + ":4: log.level: must be one of"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q, want prefix %q", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"), nil)
	var ve *ValidationError
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, &ve) {
		t.Errorf("got %v, want a plain not-exist error", err)
	}
}

// TestURLErrorHidesPassword checks that an unparsable app.url is reported
// without the URL, which may hold a password.
func TestURLErrorHidesPassword(t *testing.T) {
	t.Parallel()
	p := onlyProblem(t, base+"[app]\nurl = \"http://u:hunter2@127.0.0.1:x\"\n")
	checkProblem(t, p, "app.url", 4, "is not a valid URL")
	if strings.Contains(p.Message, "hunter2") {
		t.Errorf("message shows the password: %q", p.Message)
	}
}
