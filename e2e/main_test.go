// Package e2e runs the real zimmer-sidecar binary in front of the real
// example apps, each a separate process, and plays the Zimmer platform
// against them: the platform flow, secrets in logs (C10), graceful
// shutdown and a SIGKILL crash during concurrent consumes.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
)

func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m))
}

// appCase describes one example app: what the tests need to know about
// its own routes. Everything the sidecar config decides (prefixes, demo
// grant, meter units) is read from the config itself.
type appCase struct {
	app e2etest.App

	// tenant is the app's own (protected) route of the account id.
	tenant func(id int64) string

	// addDoc adds one knowledge-base document through the app's own
	// (protected) route; docCount reads the app's own document count.
	addDoc   func(id int64, n int) e2etest.Request
	docCount func(ctx context.Context, t *testing.T, p *e2etest.Platform, id int64) int
	// kbUpdated reads, from the app itself, when its KB last changed.
	kbUpdated func(ctx context.Context, t *testing.T, p *e2etest.Platform, id int64) time.Time

	// metered is one call of the app's metered route charged to id;
	// prepareMetered, when set, makes that call possible (a catalog item).
	metered        func(id int64) e2etest.Request
	meteredStatus  int
	prepareMetered bool

	// stream is a server-sent event stream of n events interval apart,
	// charged to id when the route is metered.
	stream      func(id int64, n int, interval time.Duration) e2etest.Request
	streamEvent string // the name of each data event
	streamUnits int64  // what one stream costs

	// wsPath is the WebSocket echo route, empty when the app has none.
	wsPath string
	// slow asks the app to take ms milliseconds to answer.
	slow func(ms int) string
}

var apps = []appCase{
	{
		app:    e2etest.PythonApp,
		tenant: func(id int64) string { return fmt.Sprintf("/internal/tenants/%d", id) },
		addDoc: func(id int64, n int) e2etest.Request {
			return e2etest.Request{Method: http.MethodPost,
				Path: fmt.Sprintf("/internal/tenants/%d/docs", id),
				Body: map[string]string{"title": fmt.Sprint("note ", n),
					"text": "we open at nine every weekday"},
				WithToken: true}
		},
		docCount: func(ctx context.Context, t *testing.T, p *e2etest.Platform, id int64) int {
			var v struct {
				Notes []any `json:"notes"`
			}
			getJSON(ctx, t, p, fmt.Sprintf("/internal/tenants/%d/docs", id), &v)
			return len(v.Notes)
		},
		kbUpdated: func(ctx context.Context, t *testing.T, p *e2etest.Platform,
			id int64) time.Time {
			var v struct {
				Summary struct {
					IndexedAt time.Time `json:"indexed_at"`
				} `json:"summary"`
			}
			getJSON(ctx, t, p, fmt.Sprintf("/internal/tenants/%d/docs/summary", id), &v)
			return v.Summary.IndexedAt
		},
		metered: func(id int64) e2etest.Request {
			return e2etest.Request{Method: http.MethodPost, Path: "/chat/ask",
				Header:    http.Header{"X-Tenant": {fmt.Sprint(id)}},
				Body:      map[string]string{"question": "when do you open?"},
				WithToken: true}
		},
		meteredStatus: http.StatusOK,
		stream: func(id int64, n int, interval time.Duration) e2etest.Request {
			return e2etest.Request{Method: http.MethodGet,
				Path: fmt.Sprintf("/chat/stream?n=%d&interval_ms=%d",
					n, interval.Milliseconds()),
				Header:    http.Header{"X-Tenant": {fmt.Sprint(id)}},
				WithToken: true}
		},
		streamEvent: "token",
		streamUnits: 1,
		slow:        func(ms int) string { return fmt.Sprintf("/slow?ms=%d", ms) },
	},
	{
		app:    e2etest.NodeApp,
		tenant: func(id int64) string { return fmt.Sprintf("/api/v1/customers/%d", id) },
		addDoc: func(id int64, n int) e2etest.Request {
			return e2etest.Request{Method: http.MethodPost,
				Path: fmt.Sprintf("/api/v1/customers/%d/catalog/items", id),
				Body: map[string]any{"sku": fmt.Sprint("sku-", n),
					"name": "green tea", "price": 3.5},
				WithToken: true}
		},
		docCount: func(ctx context.Context, t *testing.T, p *e2etest.Platform, id int64) int {
			var v struct {
				Catalog struct {
					Items int `json:"items"`
				} `json:"catalog"`
			}
			getJSON(ctx, t, p, fmt.Sprintf("/api/v1/customers/%d/catalog", id), &v)
			return v.Catalog.Items
		},
		kbUpdated: func(ctx context.Context, t *testing.T, p *e2etest.Platform,
			id int64) time.Time {
			var v struct {
				Catalog struct {
					UpdatedAt int64 `json:"updatedAt"` // unix seconds
				} `json:"catalog"`
			}
			getJSON(ctx, t, p, fmt.Sprintf("/api/v1/customers/%d/catalog", id), &v)
			return time.Unix(v.Catalog.UpdatedAt, 0)
		},
		metered: func(id int64) e2etest.Request {
			return e2etest.Request{Method: http.MethodPost,
				Path: fmt.Sprintf("/api/v1/orders?customer=%d", id),
				Body: map[string]any{"items": []map[string]any{
					{"sku": "sku-0", "qty": 1}}},
				WithToken: true}
		},
		meteredStatus:  http.StatusCreated,
		prepareMetered: true,
		stream: func(_ int64, n int, interval time.Duration) e2etest.Request {
			return e2etest.Request{Method: http.MethodGet,
				Path: fmt.Sprintf("/api/v1/events?n=%d&intervalMs=%d",
					n, interval.Milliseconds())}
		},
		streamEvent: "tick",
		wsPath:      "/ws",
		slow:        func(ms int) string { return fmt.Sprintf("/slow?ms=%d", ms) },
	},
}

// appConfig is what the tests read from an example's sidecar config.
type appConfig struct {
	prefixes    []string
	defaultDemo int64
	meterUnits  int64 // of the first metered route
}

func loadAppConfig(t *testing.T, file string) appConfig {
	t.Helper()
	cfg, err := config.Load(file, []string{"ZIMMER_SERVICE_TOKEN=unused"})
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	ac := appConfig{prefixes: cfg.Zimmer.Prefixes, defaultDemo: cfg.Ledger.DefaultDemoTokens}
	for _, r := range cfg.Routes {
		if r.Meter != nil {
			ac.meterUnits = r.Meter.Units
			break
		}
	}
	if ac.meterUnits == 0 {
		t.Fatalf("%s has no metered route", file)
	}
	return ac
}

// endpoint joins a Zimmer prefix and an endpoint name: ("/", "health")
// is "/health", ("/api", "kb/status") is "/api/kb/status".
func endpoint(prefix, name string) string {
	return path.Join(prefix, name)
}

// newToken returns a fresh service token in the shape one platform
// generator uses: 64 lowercase hex characters.
func newToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// stack is one app and its sidecar, each in its own process, with the
// test's own temp directories.
type stack struct {
	tc       appCase
	cfg      appConfig
	token    string
	dataDir  string // the app's state
	ledger   string // the ledger file
	config   string // the sidecar config in use
	app      *e2etest.AppProcess
	sidecar  *e2etest.Sidecar
	platform *e2etest.Platform
}

// startStack starts tc's app on a free port and a sidecar in front of it
// with the example config, edited by edits and overridden by env.
func startStack(t *testing.T, tc appCase, env []string, edits ...e2etest.Edit) *stack {
	t.Helper()
	tc.app.Require(t)
	dir := t.TempDir()
	s := &stack{
		tc:      tc,
		token:   newToken(t),
		dataDir: dir + "/app",
		ledger:  dir + "/ledger.db",
		config:  e2etest.WriteConfig(t, tc.app.ConfigPath(t), dir, edits...),
	}
	s.cfg = loadAppConfig(t, s.config)
	s.app = e2etest.StartApp(t, tc.app, 0, s.dataDir)
	s.startSidecar(t, env...)
	return s
}

// startSidecar (re)starts the sidecar of s on its ledger.
func (s *stack) startSidecar(t *testing.T, env ...string) {
	t.Helper()
	s.sidecar = e2etest.StartSidecar(t, e2etest.SidecarOptions{
		Config: s.config,
		AppURL: s.app.URL(),
		Ledger: s.ledger,
		Token:  s.token,
		Env:    env,
	})
	s.platform = e2etest.NewPlatform(s.sidecar.PublicURL(), s.token)
}

// zimmer returns the path of a Zimmer endpoint under the first prefix.
func (s *stack) zimmer(name string) string {
	return endpoint(s.cfg.prefixes[0], name)
}

// do sends req and fails t on a transport error.
func do(ctx context.Context, t *testing.T, p *e2etest.Platform,
	req e2etest.Request) *e2etest.Response {
	t.Helper()
	r, err := p.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	return r
}

// mustStatus sends req and fails t unless the answer has status want.
func mustStatus(ctx context.Context, t *testing.T, p *e2etest.Platform,
	req e2etest.Request, want int) *e2etest.Response {
	t.Helper()
	r := do(ctx, t, p, req)
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s",
			req.Method, req.Path, r.Status, want, r.Body)
	}
	return r
}

// getJSON gets path with the token and decodes a 200 answer into v.
func getJSON(ctx context.Context, t *testing.T, p *e2etest.Platform, path string, v any) {
	t.Helper()
	r := mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet, Path: path,
		WithToken: true}, http.StatusOK)
	if err := r.JSON(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// testContext returns a context that ends with the test, bounded so a
// hung process fails the test instead of the whole run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}
