package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/admin"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// testToken is the service token the test configurations accept.
const testToken = "cmd-test-token-4d2f9a61e0b8"

// writeFile writes content to name in a temporary directory and returns
// its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// configFile writes a valid configuration: public and admin as given,
// the app at appURL, the ledger and the token file in a temporary
// directory.
func configFile(t *testing.T, public, adminAddr, appURL string) string {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "zimmer-sidecar.toml", fmt.Sprintf(`[automation]
version = "3.1.4"

[listen]
public = %q
admin = %q
shutdown_grace = "5s"

[auth]
tokens = [%q]

[app]
url = %q

[ledger]
path = %q
`, public, adminAddr, "file:"+tokenFile, appURL, filepath.Join(dir, "ledger.db")))
}

// adminAPI is the admin API on a loopback test server over a bolt ledger
// with account 7 provisioned.
type adminAPI struct {
	srv   *httptest.Server
	store *bolt.Store

	mu    sync.Mutex
	calls int
	// tokens holds the X-Zimmer-Service-Token of each call, "" for none.
	tokens []string
}

func newAdminAPI(t *testing.T) *adminAPI {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), metering.Options{
		DefaultDemoTokens: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Provision(context.Background(), metering.ProvisionRequest{
		UserAutomationID: 7, UserID: 70,
	})
	if err != nil {
		t.Fatal(err)
	}

	a := &adminAPI{store: st}
	mux := http.NewServeMux()
	admin.Register(mux, st, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			a.calls++
			a.tokens = append(a.tokens, r.Header.Get("X-Zimmer-Service-Token"))
			a.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *adminAPI) callCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

func (a *adminAPI) account(t *testing.T) metering.Account {
	t.Helper()
	acct, err := a.store.Account(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	return acct
}

// runCmd calls run with args and returns its error and outputs.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}
