package config

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that no document panics the loader, that every failure
// is a *ValidationError with explained problems, and that the secret held
// by the environment never appears in a message.
func FuzzParse(f *testing.F) {
	if example, err := os.ReadFile(examplePath); err == nil {
		f.Add(example)
	}
	seeds := []string{
		"",
		base,
		base + "[listen]\npublic = 1\n",
		base + "[[route]]\npath = \"/t/{id}/*\"\nmeter = { user = \"path:id\" }\n",
		base + "[auth]\ntokens = [\"env:SECRET\", \"file:/s\", \"sha256:00\"]\n",
		base + "[ledger]\nbackend = \"postgres\"\ndsn = \"env:SECRET\"\nmax_conns = 0\n",
		base + "[ledger]\ndsn = [\"file:/s\"]\nconnect_timeout = 5\n",
		base + "[zimmer.kb_status]\nstate = { from = \"a\", map = { \"x.y\" = \"ready\" } }\n",
		"route = [{path = \"/a\"}, 1]\n[[app.probe]]\n",
		"a = [\n",
		"[a.b]\n[a]\nb = 1\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	const secret = "fuzz-planted-secret"
	env := []string{
		"SECRET=" + secret,
		"ZIMMER_SIDECAR_LOG__LEVEL=warn",
		"ZIMMER_SIDECAR_ROUTE__0__PROTECT=true",
		"ZIMMER_SIDECAR_APP__PROBE__0__PATH=/env",
	}
	o := Options{ReadFile: fakeFiles(map[string]string{"/s": secret}), FileName: "fuzz.toml"}

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := o.Parse(data, env)
		if err == nil {
			if c == nil {
				t.Fatal("nil Config without an error")
			}
			return
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) == 0 {
			t.Fatalf("got %T %v, want a *ValidationError with problems", err, err)
		}
		for _, p := range ve.Problems {
			if p.Message == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
		if !bytes.Contains(data, []byte(secret)) && strings.Contains(err.Error(), secret) {
			t.Fatalf("a message shows the secret:\n%v", err)
		}
	})
}
