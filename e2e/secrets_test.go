package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
)

// TestSecretsNeverLogged is case C10 end to end: with debug logging and
// Bearer tokens accepted, requests carry the service token, a wrong token,
// "Authorization: Bearer sk-...", "?api_key=sk-..." and a Telegram bot
// token. No sidecar log line may hold any of them, and the app never
// receives the service token or a Bearer credential the sidecar consumed.
func TestSecretsNeverLogged(t *testing.T) {
	for _, tc := range apps {
		t.Run(tc.app.Name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, tc, []string{
				"ZIMMER_SIDECAR_LOG__LEVEL=debug",
				"ZIMMER_SIDECAR_AUTH__ACCEPT_BEARER=true",
			})
			ctx := testContext(t)
			testSecretsNeverLogged(ctx, t, s, 201)
		})
	}
}

// plantedSecrets are the values no log line may hold.
type plantedSecrets struct {
	token    string // the real service token
	wrong    string // a wrong one, in neither key nor known shape
	bearer   string // an OpenAI-style key in Authorization
	query    string // an OpenAI-style key in ?api_key=
	botToken string // the Telegram bot token sent to provision
}

func (p plantedSecrets) all() map[string]string {
	return map[string]string{"service token": p.token, "wrong token": p.wrong,
		"bearer key": p.bearer, "query key": p.query, "bot token": p.botToken}
}

func testSecretsNeverLogged(ctx context.Context, t *testing.T, s *stack, id int64) {
	sec := plantedSecrets{
		token:    s.token,
		wrong:    "w" + newToken(t)[:42],
		bearer:   "sk-e2eBearer" + newToken(t)[:24],
		query:    "sk-e2eQuery" + newToken(t)[:24],
		botToken: "7123456789:AAH" + newToken(t)[:30],
	}
	p := s.platform
	apiKey := "api_key=" + url.QueryEscape(sec.query)
	bearer := http.Header{"Authorization": {"Bearer " + sec.bearer}}

	// 1. The Zimmer endpoints, with every secret on the side.
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodPost,
		Path:   s.zimmer("provision") + "?" + apiKey,
		Header: bearer,
		Body: e2etest.ProvisionBody{UserAutomationID: id, UserID: 9,
			BotToken: sec.botToken, DemoTokens: 20},
		WithToken: true}, http.StatusOK)
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodPost,
		Path:   s.zimmer("usage/consume") + "?" + apiKey,
		Header: bearer,
		Body: e2etest.ConsumeBody{UserAutomationID: id, Units: 1,
			UsageType: "c10"},
		WithToken: true}, http.StatusOK)
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
		Path:      fmt.Sprintf("%s?user_automation_id=%d&%s", s.zimmer("kb/status"), id, apiKey),
		WithToken: true}, http.StatusOK)

	// 2. Refusals: a wrong token in each place, a key as the Bearer
	// token, and a body that holds a key where an id belongs.
	for _, h := range []http.Header{
		{"X-Zimmer-Service-Token": {sec.wrong}},
		{"Authorization": {"Bearer " + sec.wrong}},
		bearer,
	} {
		mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodPost,
			Path: s.zimmer("usage/consume"), Header: h,
			Body: e2etest.ConsumeBody{UserAutomationID: id, Units: 1, UsageType: "x"}},
			http.StatusUnauthorized)
	}
	r := do(ctx, t, p, e2etest.Request{Method: http.MethodPost,
		Path: s.zimmer("usage/consume"), WithToken: true,
		RawBody: fmt.Sprintf(`{"user_automation_id": %q, "units": 1, "usage_type": %q}`,
			sec.query, sec.bearer)})
	if r.Status != http.StatusBadRequest {
		t.Errorf("consume with a key for an id: %v, want 400", r)
	}

	// 3. The app's routes: protected (the token and a Bearer key), the
	// Bearer token itself, passthrough and metered, each with api_key.
	echoes := []*e2etest.Response{
		mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
			Path: "/debug/echo?" + apiKey, Header: bearer.Clone(), WithToken: true},
			http.StatusOK),
		mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodPost,
			Path:   "/debug/echo",
			Header: http.Header{"Authorization": {"Bearer " + sec.token}},
			Body:   map[string]string{"hello": "app"}},
			http.StatusOK),
	}
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
		Path: s.tc.slow(1) + "&" + apiKey + "&token=" + sec.token, Header: bearer},
		http.StatusOK)
	metered := s.tc.metered(id)
	metered.Path += sep(metered.Path) + apiKey
	if s.tc.prepareMetered {
		mustStatus(ctx, t, p, s.tc.addDoc(id, 0), http.StatusCreated)
	}
	mustStatus(ctx, t, p, metered, s.tc.meteredStatus)
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
		Path: "/no/such/route?" + apiKey, Header: bearer}, http.StatusNotFound)
	for _, v := range []string{sec.token, sec.bearer} { // secrets in paths
		mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
			Path: "/files/" + v}, http.StatusNotFound)
	}

	// 4. What the app received: neither the service token nor the
	// Bearer credentials the sidecar consumed (it owns Authorization:
	// Bearer once accept_bearer is on).
	for i, e := range echoes {
		var v struct {
			Headers json.RawMessage `json:"headers"`
		}
		if err := e.JSON(&v); err != nil || len(v.Headers) == 0 {
			t.Fatalf("echo %d: %v, %s", i, err, e.Body)
		}
		if bytes.Contains(e.Body, []byte(sec.token)) ||
			bytes.Contains(v.Headers, []byte(sec.bearer)) {
			t.Errorf("echo %d: the app received a secret: %s", i, e.Body)
		}
		if bytes.Contains(bytes.ToLower(v.Headers), []byte("zimmer-service-token")) {
			t.Errorf("echo %d: the app received the token header: %s", i, v.Headers)
		}
	}

	// 5. Every line the sidecar wrote, and the app's own log for the
	// service token it must never have seen (except in the paths that
	// carried it to the app).
	lines := s.sidecar.Lines()
	seenEcho := false
	for _, l := range lines {
		for name, v := range sec.all() {
			if strings.Contains(l.Text, v) {
				t.Errorf("sidecar %s line holds the %s: %s", l.Stream, name, l.Text)
			}
		}
		seenEcho = seenEcho || strings.Contains(l.Text, `"path":"/debug/echo"`)
	}
	if !seenEcho {
		t.Errorf("no access-log line for /debug/echo among %d lines: the grep proves nothing",
			len(lines))
	}
	for _, l := range s.app.Lines() {
		// The /files/ paths carried it on purpose; the app logs paths.
		if strings.Contains(l.Text, sec.token) && !strings.Contains(l.Text, "/files/") {
			t.Errorf("app %s line holds the service token: %s", l.Stream, l.Text)
		}
	}
}

// sep is the separator that appends a query parameter to path.
func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}
