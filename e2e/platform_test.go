package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// TestPlatformFlow plays the platform against each example app behind the
// real sidecar (issue 2): health through the platform's classifier across
// an app crash and restart, idempotent provisioning, consuming through the
// demo into paid tokens credited with the CLI, KB status in both dialects
// and reset, every auth failure, 405s, every prefix with and without the
// trailing slash, a metered and a protected app route (Expect:
// 100-continue included), SSE and WebSocket.
func TestPlatformFlow(t *testing.T) {
	for _, tc := range apps {
		t.Run(tc.app.Name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, tc, nil, e2etest.FastProbes("300ms", "250ms", 2, 2))
			ctx := testContext(t)

			// The health cycle restarts the app, so it runs on this test
			// (which owns the processes) rather than in a subtest.
			testHealthCycle(ctx, t, s)

			// Each step uses its own accounts, so one failing step does
			// not hide what the others would find.
			t.Run("provision", func(t *testing.T) { testProvision(ctx, t, s, 101) })
			t.Run("consume", func(t *testing.T) { testConsume(ctx, t, s, 102) })
			t.Run("kb", func(t *testing.T) { testKB(ctx, t, s, 103) })
			t.Run("auth", func(t *testing.T) { testAuthFailures(ctx, t, s, 104) })
			t.Run("405", func(t *testing.T) { testMethodNotAllowed(ctx, t, s) })
			t.Run("prefixes", func(t *testing.T) { testPrefixes(ctx, t, s, 105) })
			t.Run("metered", func(t *testing.T) { testMeteredRoute(ctx, t, s, 106) })
			t.Run("protected", func(t *testing.T) { testProtectedRoute(ctx, t, s) })
			t.Run("expect-continue", func(t *testing.T) { testExpectContinue(t, s) })
			t.Run("sse", func(t *testing.T) { testSSE(ctx, t, s, 107) })
			if tc.wsPath != "" {
				t.Run("websocket", func(t *testing.T) { testWebSocket(t, s) })
			}
		})
	}
}

// healthState gets /health under the first prefix and describes it.
func healthState(ctx context.Context, s *stack) (status int, body, class string, err error) {
	r, class, err := s.platform.Health(ctx, s.zimmer("health"))
	if err != nil {
		return 0, "", "", err
	}
	var v struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(r.Body, &v)
	return r.Status, v.Status, class, nil
}

func testHealthCycle(ctx context.Context, t *testing.T, s *stack) {
	waitHealth := func(wantCode int, wantStatus, wantClass string) {
		t.Helper()
		e2etest.Eventually(t, 20*time.Second, 100*time.Millisecond, func() (bool, string) {
			code, status, class, err := healthState(ctx, s)
			msg := fmt.Sprintf("got %d %q (%s), err %v; want %d %q (%s)",
				code, status, class, err, wantCode, wantStatus, wantClass)
			return err == nil && code == wantCode && status == wantStatus &&
				class == wantClass, msg
		})
	}

	// 1. Healthy from the start, on every prefix, slash or not.
	for _, prefix := range s.cfg.prefixes {
		for _, p := range []string{endpoint(prefix, "health"), endpoint(prefix, "health") + "/"} {
			r, class, err := s.platform.Health(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if class != health.ClassHealthy {
				t.Errorf("GET %s: classified %s, want healthy; %d %s",
					p, class, r.Status, r.Body)
			}
		}
	}

	// 2. The app dies: once fail_after probes failed, 503 "down".
	port := s.app.Port()
	s.app.Kill()
	waitHealth(http.StatusServiceUnavailable, "down", health.ClassUnhealthy)

	// 3. The app comes back on the same port: healthy again.
	s.app = e2etest.StartApp(t, s.tc.app, port, s.dataDir)
	waitHealth(http.StatusOK, "ok", health.ClassHealthy)
}

func testProvision(ctx context.Context, t *testing.T, s *stack, id int64) {
	p := s.platform

	// 1. The platform's shape: ints, null bot token, null demo tokens.
	r, first, err := p.Provision(ctx, s.zimmer("provision"), e2etest.ProvisionBody{
		UserAutomationID: id, UserID: 42})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("first provision: %v %v", err, r)
	}
	if !first.Success || first.AlreadyProvisioned || first.IntegrationStatus != "active" ||
		first.DemoTokens != s.cfg.defaultDemo || first.PaidTokens != 0 ||
		first.UserAutomationID != id {
		t.Errorf("first provision: got %s", r.Body)
	}

	// 2. Again, with numeric strings: 200, the same account, no new grant.
	r, second, err := p.Provision(ctx, s.zimmer("provision"), e2etest.ProvisionBody{
		UserAutomationID: fmt.Sprint(id), UserID: "42"})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("second provision: %v %v", err, r)
	}
	if !second.Success || !second.AlreadyProvisioned ||
		second.DemoTokens != s.cfg.defaultDemo ||
		second.ProvisionedAt != first.ProvisionedAt {
		t.Errorf("second provision: got %s, first was %+v", r.Body, first)
	}

	// 3. A third asking for a bigger demo on the last prefix changes
	// nothing either.
	last := endpoint(s.cfg.prefixes[len(s.cfg.prefixes)-1], "provision") + "/"
	r, third, err := p.Provision(ctx, last, e2etest.ProvisionBody{
		UserAutomationID: id, UserID: 42, DemoTokens: 500})
	if err != nil || r.Status != http.StatusOK || third.DemoTokens != s.cfg.defaultDemo {
		t.Errorf("third provision at %s: %v, %d %s", last, err, r.Status, r.Body)
	}

	// 4. The ledger granted the demo exactly once.
	var grants []metering.Entry
	for _, e := range e2etest.LedgerJournal(t, s.sidecar.AdminURL()) {
		if e.UserAutomationID == id {
			grants = append(grants, e)
		}
	}
	if len(grants) != 1 || grants[0].Kind != metering.EntryProvision ||
		grants[0].DemoDelta != s.cfg.defaultDemo {
		t.Errorf("journal for %d: got %+v, want one provision of %d demo tokens",
			id, grants, s.cfg.defaultDemo)
	}

	// 5. The app hook created the tenant in the app itself.
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet,
		Path: s.tc.tenant(id), WithToken: true}, http.StatusOK)
}

// provision provisions id with demo tokens (nil: the default) or fails t.
func provision(ctx context.Context, t *testing.T, s *stack, id int64, demo any) {
	t.Helper()
	r, _, err := s.platform.Provision(ctx, s.zimmer("provision"), e2etest.ProvisionBody{
		UserAutomationID: id, UserID: 42, DemoTokens: demo})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("provision %d: %v %v", id, err, r)
	}
}

func testConsume(ctx context.Context, t *testing.T, s *stack, id int64) {
	provision(ctx, t, s, id, nil)
	consume := func(units int64) (int, string, bool, int64, int64) {
		t.Helper()
		r, a, err := s.platform.Consume(ctx, s.zimmer("usage/consume"),
			e2etest.ConsumeBody{UserAutomationID: id, Units: units, UsageType: "message"}, "")
		if err != nil {
			t.Fatalf("consume: %v", err)
		}
		return r.Status, string(r.Body), a.Accepted, a.RemainingDemoTokens, a.RemainingPaidTokens
	}

	// 1. The demo, one unit at a time, until a refusal (still a 200).
	accepted := int64(0)
	for {
		status, body, ok, demo, paid := consume(1)
		if status != http.StatusOK {
			t.Fatalf("consume: status %d %s, want 200", status, body)
		}
		if !ok {
			if demo != 0 || paid != 0 {
				t.Errorf("refusal: got %s, want 0 demo and 0 paid left", body)
			}
			break
		}
		accepted++
		if demo != s.cfg.defaultDemo-accepted || paid != 0 {
			t.Errorf("consume %d: got %s", accepted, body)
		}
		if accepted > s.cfg.defaultDemo {
			t.Fatalf("accepted %d consumes of 1 with a demo of %d", accepted, s.cfg.defaultDemo)
		}
	}
	if accepted != s.cfg.defaultDemo {
		t.Errorf("accepted %d consumes of 1, want the demo's %d", accepted, s.cfg.defaultDemo)
	}

	// 2. A purchase, credited with the CLI, is spent next.
	acct := e2etest.LedgerCredit(t, s.sidecar.AdminURL(), id, 7)
	if acct.PaidTokens != 7 || acct.DemoTokens != 0 {
		t.Errorf("after credit: got %+v, want 0 demo and 7 paid", acct)
	}
	if _, body, ok, demo, paid := consume(3); !ok || demo != 0 || paid != 4 {
		t.Errorf("paid consume: got %s, want accepted with 4 paid left", body)
	}
	if _, body, ok, _, paid := consume(5); ok || paid != 4 {
		t.Errorf("overdraft: got %s, want a refusal leaving 4 paid", body)
	}
	if a := e2etest.LedgerAccount(t, s.sidecar.AdminURL(), id); a.PaidTokens != 4 ||
		a.DemoTokens != 0 {
		t.Errorf("ledger show: got %+v, want 0 demo and 4 paid", a)
	}
}

func testKB(ctx context.Context, t *testing.T, s *stack, id int64) {
	p := s.platform
	provision(ctx, t, s, id, nil)

	// 1. Nothing yet.
	if _, a, err := p.KBStatusGET(ctx, s.zimmer("kb/status"), id); err != nil ||
		a.Status != "empty" || a.TotalDocuments != 0 {
		t.Errorf("empty KB: got %+v, %v", a, err)
	}

	// 2. Two documents through the app's own route.
	for n := range 2 {
		mustStatus(ctx, t, p, s.tc.addDoc(id, n), http.StatusCreated)
	}

	// 3. Both dialects on every prefix, slash or not, with the app's own
	// time of the last change in ISO 8601 (shop-bot has unix seconds).
	updated := s.tc.kbUpdated(ctx, t, p, id)
	if updated.IsZero() || updated.Unix() == 0 {
		t.Fatalf("the app reports no KB update time after adding documents")
	}
	for _, prefix := range s.cfg.prefixes {
		for _, path := range []string{endpoint(prefix, "kb/status"),
			endpoint(prefix, "kb/status") + "/"} {
			r, a, err := p.KBStatusGET(ctx, path, id)
			if err != nil || r.Status != http.StatusOK || a.Status != "ready" ||
				a.KBState != "ready" || a.TotalDocuments != 2 || !a.Healthy ||
				!a.SupportsReset || a.UserAutomationID != id {
				t.Errorf("GET %s: %v, %d %s", path, err, r.Status, r.Body)
			}
			if got, err := time.Parse(zimmer.TimeLayout, a.LastUpdated); err != nil ||
				!got.Truncate(time.Second).Equal(updated.Truncate(time.Second)) {
				t.Errorf("GET %s: last_updated %q (%v), want the app's %s in ISO 8601",
					path, a.LastUpdated, err, updated.UTC())
			}
			r, a, err = p.KBStatusPOST(ctx, path, 42, id)
			if err != nil || r.Status != http.StatusOK || a.Status != "healthy" ||
				a.KBState != "ready" || a.TotalDocuments != 2 || !a.SupportsReset ||
				!bytes.Contains(r.Body, []byte(`"error_logs":[`)) ||
				!bytes.Contains(r.Body, []byte(`"backup_status":`)) {
				t.Errorf("POST %s: %v, %d %s", path, err, r.Status, r.Body)
			}
		}
	}

	// 4. The platform's reset (id in the body) empties the app's KB.
	r, a, err := p.KBReset(ctx, s.zimmer("kb/reset"), id)
	if err != nil || r.Status != http.StatusOK || !a.Success || a.Status != "success" ||
		a.ResetAt == "" {
		t.Fatalf("reset: %v, %v", err, r)
	}
	if n := s.tc.docCount(ctx, t, p, id); n != 0 {
		t.Errorf("after reset the app still has %d documents", n)
	}
	if _, a, err := p.KBStatusGET(ctx, s.zimmer("kb/status"), id); err != nil ||
		a.Status != "empty" || a.TotalDocuments != 0 {
		t.Errorf("after reset: got %+v, %v", a, err)
	}

	// 5. The guide's reset (id in the query, no body) on the last prefix.
	mustStatus(ctx, t, p, s.tc.addDoc(id, 9), http.StatusCreated)
	last := endpoint(s.cfg.prefixes[len(s.cfg.prefixes)-1], "kb/reset") + "/"
	mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodPost,
		Path: fmt.Sprintf("%s?user_automation_id=%d", last, id), WithToken: true},
		http.StatusOK)
	if n := s.tc.docCount(ctx, t, p, id); n != 0 {
		t.Errorf("after the guide's reset the app still has %d documents", n)
	}
}

func testAuthFailures(ctx context.Context, t *testing.T, s *stack, id int64) {
	p := s.platform
	provision(ctx, t, s, id, nil)
	bodies := map[string]any{
		"provision":     e2etest.ProvisionBody{UserAutomationID: id, UserID: 42},
		"usage/consume": e2etest.ConsumeBody{UserAutomationID: id, Units: 1, UsageType: "x"},
		"kb/status":     map[string]int64{"user_id": 42, "user_automation_id": id},
		"kb/reset":      map[string]int64{"user_automation_id": id},
	}
	cases := []struct {
		name       string
		header     http.Header
		wantStatus int
		wantDetail string
	}{
		{"missing", nil, http.StatusUnauthorized, "Missing service token"},
		{"wrong", http.Header{"X-Zimmer-Service-Token": {newToken(t)}},
			http.StatusUnauthorized, "Invalid service token"},
		{"bearer refused by default",
			http.Header{"Authorization": {"Bearer " + s.token}},
			http.StatusUnauthorized, "Missing service token"},
		{"lower-case name", http.Header{"x-zimmer-service-token": {s.token}},
			http.StatusOK, ""},
		{"upper-case name", http.Header{"X-ZIMMER-SERVICE-TOKEN": {s.token}},
			http.StatusOK, ""},
	}
	for _, c := range cases {
		for ep, body := range bodies {
			r := do(ctx, t, p, e2etest.Request{Method: http.MethodPost,
				Path: s.zimmer(ep), Header: c.header, Body: body})
			if r.Status != c.wantStatus {
				t.Errorf("%s, %s: status %d, want %d; %s",
					c.name, ep, r.Status, c.wantStatus, r.Body)
				continue
			}
			if c.wantStatus == http.StatusOK {
				continue
			}
			if r.Detail() != c.wantDetail ||
				!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Errorf("%s, %s: got %q (%s), want detail %q",
					c.name, ep, r.Body, r.Header.Get("Content-Type"), c.wantDetail)
			}
		}
	}
}

func testMethodNotAllowed(ctx context.Context, t *testing.T, s *stack) {
	for _, prefix := range s.cfg.prefixes {
		for _, ep := range []string{"provision", "usage/consume", "kb/reset"} {
			for _, path := range []string{endpoint(prefix, ep), endpoint(prefix, ep) + "/"} {
				// The platform's URL checker: a bare GET, no token.
				r := do(ctx, t, s.platform, e2etest.Request{Method: http.MethodGet, Path: path})
				allow := r.Header.Get("Allow")
				if r.Status != http.StatusMethodNotAllowed || !strings.Contains(allow, "POST") ||
					r.Detail() == "" {
					t.Errorf("GET %s: %d, Allow %q, %s; want 405 with Allow: POST",
						path, r.Status, allow, r.Body)
				}
			}
		}
	}
}

func testPrefixes(ctx context.Context, t *testing.T, s *stack, id int64) {
	for _, prefix := range s.cfg.prefixes {
		for _, slash := range []string{"", "/"} {
			path := endpoint(prefix, "provision") + slash
			r, a, err := s.platform.Provision(ctx, path, e2etest.ProvisionBody{
				UserAutomationID: id, UserID: 42})
			if err != nil || r.Status != http.StatusOK || !a.Success {
				t.Errorf("POST %s: %v; %d %s (Location %q)", path, err, r.Status, r.Body,
					r.Header.Get("Location"))
			}
			path = endpoint(prefix, "usage/consume") + slash
			r, c, err := s.platform.Consume(ctx, path, e2etest.ConsumeBody{
				UserAutomationID: id, Units: 1, UsageType: "x"}, "")
			if err != nil || r.Status != http.StatusOK || c.UserAutomationID != id {
				t.Errorf("POST %s: %v; %d %s", path, err, r.Status, r.Body)
			}
		}
	}
}

func testMeteredRoute(ctx context.Context, t *testing.T, s *stack, id int64) {
	p := s.platform
	units := s.cfg.meterUnits
	provision(ctx, t, s, id, 2*units) // exactly two calls' worth
	if s.tc.prepareMetered {
		mustStatus(ctx, t, p, s.tc.addDoc(id, 0), http.StatusCreated)
	}

	// 1. Two charged calls reach the app; the third finds no balance.
	for i := range 2 {
		r := do(ctx, t, p, s.tc.metered(id))
		if r.Status != s.tc.meteredStatus {
			t.Fatalf("metered call %d: status %d, want %d; %s",
				i+1, r.Status, s.tc.meteredStatus, r.Body)
		}
	}
	r := do(ctx, t, p, s.tc.metered(id))
	if r.Status != http.StatusPaymentRequired || r.Detail() == "" {
		t.Errorf("metered call 3: %d %s, want 402 with a JSON detail", r.Status, r.Body)
	}

	// 2. The ledger shows exactly the two charges.
	if a := e2etest.LedgerAccount(t, s.sidecar.AdminURL(), id); a.DemoTokens != 0 ||
		a.PaidTokens != 0 {
		t.Errorf("after the metered calls: got %+v, want an empty account", a)
	}
	var debits int64
	for _, e := range e2etest.LedgerJournal(t, s.sidecar.AdminURL()) {
		if e.UserAutomationID == id && e.Kind == metering.EntryDebit {
			debits += -e.DemoDelta - e.PaidDelta
		}
	}
	if debits != 2*units {
		t.Errorf("journal debits for %d: %d units, want %d", id, debits, 2*units)
	}
}

func testProtectedRoute(ctx context.Context, t *testing.T, s *stack) {
	p := s.platform
	const path = "/debug/echo"

	// 1. No token: refused by the sidecar with the platform's shape.
	r := do(ctx, t, p, e2etest.Request{Method: http.MethodGet, Path: path})
	if r.Status != http.StatusUnauthorized || r.Detail() != "Missing service token" {
		t.Errorf("GET %s without a token: %d %s, want 401", path, r.Status, r.Body)
	}

	// 2. With it (and a look-alike spelled with underscores), the app
	// answers and never sees the token.
	r = mustStatus(ctx, t, p, e2etest.Request{Method: http.MethodGet, Path: path + "?q=1",
		Header:    http.Header{"X_Zimmer_Service_Token": {s.token}},
		WithToken: true}, http.StatusOK)
	var echo struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	}
	if err := r.JSON(&echo); err != nil || echo.Method != "GET" || echo.Path != path {
		t.Errorf("echo: got %s (%v), want GET %s", r.Body, err, path)
	}
	lower := bytes.ToLower(r.Body)
	if bytes.Contains(r.Body, []byte(s.token)) ||
		bytes.Contains(lower, []byte("zimmer-service-token")) ||
		bytes.Contains(lower, []byte("zimmer_service_token")) {
		t.Errorf("the app received the service token: %s", r.Body)
	}
}

func testSSE(ctx context.Context, t *testing.T, s *stack, id int64) {
	provision(ctx, t, s, id, 10)
	const n, interval = 5, 250 * time.Millisecond
	st, err := openStream(ctx, s.platform, s.tc.stream(id, n, interval))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	events, err := st.all()
	if err != nil {
		t.Fatalf("stream: %v after %d events", err, len(events))
	}
	var data []sseEvent
	for _, ev := range events {
		if ev.name == s.tc.streamEvent {
			data = append(data, ev)
		}
	}
	if len(data) != n || len(events) != n+1 {
		t.Fatalf("stream: got %d %q events of %d, want %d and a final one",
			len(data), s.tc.streamEvent, len(events), n)
	}

	// The app spaces its events; a proxy that buffered the stream would
	// deliver them together at the end. The first must arrive well
	// before the last (a lower bound, which slowness cannot break).
	if gap, min := events[len(events)-1].at.Sub(data[0].at), (n-1)*interval/2; gap < min {
		t.Errorf("the first event came %s before the end, want at least %s: "+
			"the stream was buffered", gap, min)
	}
	if s.tc.streamUnits > 0 {
		if a := e2etest.LedgerAccount(t, s.sidecar.AdminURL(), id); a.DemoTokens !=
			10-s.tc.streamUnits {
			t.Errorf("after the stream: got %+v, want %d demo tokens", a,
				10-s.tc.streamUnits)
		}
	}
}

func testWebSocket(t *testing.T, s *stack) {
	const msg = "hello through the sidecar"
	got, err := wsEcho(s.sidecar.Public, s.tc.wsPath, msg)
	if err != nil {
		t.Fatalf("websocket %s: %v", s.tc.wsPath, err)
	}
	if got != msg {
		t.Errorf("echo: got %q, want %q", got, msg)
	}
}

// testExpectContinue is case C8 against the real binary: a protected
// route with no token, announcing a body with Expect: 100-continue, is
// refused before any 100 Continue (which would be the first answer read),
// so the body is never sent: 401 for a small body, 401 or 413 for one over
// listen.max_body.
func testExpectContinue(t *testing.T, s *stack) {
	cases := []struct {
		name string
		size int
		want []int
	}{
		{"small", 1 << 10, []int{http.StatusUnauthorized}},
		{"over max_body", 5 << 20,
			[]int{http.StatusUnauthorized, http.StatusRequestEntityTooLarge}},
	}
	for _, c := range cases {
		status, err := expectContinue(s.sidecar.Public, "/debug/echo", c.size)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Contains(c.want, status) {
			t.Errorf("%s: got status %d, want one of %v", c.name, status, c.want)
		}
	}
}

// expectContinue sends only the head of a POST announcing size bytes with
// Expect: 100-continue and returns the status of the first answer.
func expectContinue(addr, path string, size int) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n"+
		"Expect: 100-continue\r\n\r\n", path, addr, size)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
