package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/admin"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// acctID is the account every test provisions.
const acctID = 7

// openLedger opens a bolt ledger in a temporary directory, provisions
// acctID with 5 demo tokens and closes the ledger when t ends.
func openLedger(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), metering.Options{
		DefaultDemoTokens: 5,
		MaxUnits:          1000,
		DemoRule:          metering.DemoWhole,
	})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Provision(context.Background(), metering.ProvisionRequest{
		UserAutomationID: acctID,
		UserID:           70,
	})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return st
}

// newHandler returns a mux with the admin routes and no authentication.
func newHandler(l metering.Ledger) http.Handler {
	mux := http.NewServeMux()
	admin.Register(mux, l, nil)
	return mux
}

// serve sends one request to h and returns the recorded answer.
func serve(
	h http.Handler,
	method, target, body string,
	hdr http.Header,
) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// detail decodes a JSON error answer, failing t when it is not one.
func detail(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("got Content-Type %q, want application/json", ct)
	}
	var e struct {
		Detail *string `json:"detail"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Detail == nil {
		t.Fatalf("got body %q, want a JSON {\"detail\": ...} (err %v)", rec.Body, err)
	}
	return *e.Detail
}

func account(t *testing.T, l metering.Ledger, id int64) metering.Account {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("account %d: %v", id, err)
	}
	return a
}

func TestShow(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)

	rec := serve(h, "GET", "/admin/ledger/accounts/7", "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("got status %d, want 200: %s", rec.Code, rec.Body)
	}
	var got metering.Account
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("decode account: %v", err)
	}
	if got.UserAutomationID != acctID || got.UserID != 70 || got.DemoTokens != 5 ||
		got.PaidTokens != 0 {
		t.Errorf("got account %+v, want id 7, user 70, demo 5, paid 0", got)
	}
}

func TestShowErrors(t *testing.T) {
	t.Parallel()
	h := newHandler(openLedger(t))
	tests := []struct {
		name   string
		target string
		want   int
	}{
		{"unknown account", "/admin/ledger/accounts/8", http.StatusNotFound},
		{"zero", "/admin/ledger/accounts/0", http.StatusBadRequest},
		{"negative", "/admin/ledger/accounts/-7", http.StatusBadRequest},
		{"not a number", "/admin/ledger/accounts/seven", http.StatusBadRequest},
		{"overflow", "/admin/ledger/accounts/9223372036854775808", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(h, "GET", tt.target, "", nil)
			if rec.Code != tt.want {
				t.Fatalf("got status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if d := detail(t, rec); d == "" {
				t.Error("got an empty detail")
			}
		})
	}
}

func TestCredit(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)

	rec := serve(h, "POST", "/admin/ledger/credit",
		`{"user_automation_id": 7, "units": 50, "reason": "invoice 12"}`, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("got status %d, want 200: %s", rec.Code, rec.Body)
	}
	var got metering.Account
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("decode account: %v", err)
	}
	if got.PaidTokens != 50 || got.DemoTokens != 5 {
		t.Errorf("got answer %+v, want paid 50, demo 5", got)
	}
	if a := account(t, st, acctID); a.PaidTokens != 50 {
		t.Errorf("got stored paid %d, want 50", a.PaidTokens)
	}

	// The reason reaches the journal.
	var reasons []string
	err := st.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		if e.Kind == metering.EntryCredit {
			reasons = append(reasons, e.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	if len(reasons) != 1 || reasons[0] != "invoice 12" {
		t.Errorf("got credit reasons %q, want [\"invoice 12\"]", reasons)
	}
}

func TestCreditRejects(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)
	key := func(v ...string) http.Header { return http.Header{"Idempotency-Key": v} }
	tests := []struct {
		name string
		body string
		hdr  http.Header
		want int
	}{
		{"empty body", "", nil, http.StatusBadRequest},
		{"not JSON", "units=5", nil, http.StatusBadRequest},
		{"array", `[7, 5]`, nil, http.StatusBadRequest},
		{"string id", `{"user_automation_id": "7", "units": 5}`, nil, http.StatusBadRequest},
		{"fraction", `{"user_automation_id": 7, "units": 1.5}`, nil, http.StatusBadRequest},
		{"unknown field", `{"user_automation_id": 7, "units": 5, "paid": 1}`, nil,
			http.StatusBadRequest},
		{"zero units", `{"user_automation_id": 7, "units": 0}`, nil, http.StatusBadRequest},
		{"negative units", `{"user_automation_id": 7, "units": -5}`, nil,
			http.StatusBadRequest},
		{"missing id", `{"units": 5}`, nil, http.StatusBadRequest},
		{"body over limit", `{"user_automation_id": 7, "units": 5, "reason": "` +
			strings.Repeat("x", 70<<10) + `"}`, nil, http.StatusBadRequest},
		{"empty key", `{"user_automation_id": 7, "units": 5}`, key(""),
			http.StatusBadRequest},
		{"two keys", `{"user_automation_id": 7, "units": 5}`, key("a", "b"),
			http.StatusBadRequest},
		{"unknown account", `{"user_automation_id": 8, "units": 5}`, nil,
			http.StatusNotFound},
		{"overflow", `{"user_automation_id": 7, "units": 9223372036854775807}`, nil,
			http.StatusOK}, // the first fills the balance
		{"overflow again", `{"user_automation_id": 7, "units": 1}`, nil,
			http.StatusBadRequest},
	}
	for _, tt := range tests {
		rec := serve(h, "POST", "/admin/ledger/credit", tt.body, tt.hdr)
		if rec.Code != tt.want {
			t.Errorf("%s: got status %d, want %d: %s", tt.name, rec.Code, tt.want, rec.Body)
			continue
		}
		if tt.want != http.StatusOK {
			if d := detail(t, rec); d == "" {
				t.Errorf("%s: got an empty detail", tt.name)
			}
		}
	}
	// Only the one valid credit changed the balance.
	if a := account(t, st, acctID); a.PaidTokens != 9223372036854775807 || a.DemoTokens != 5 {
		t.Errorf("got balances demo %d paid %d, want 5 and MaxInt64", a.DemoTokens, a.PaidTokens)
	}
}

func TestCreditIdempotencyKey(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)
	body := `{"user_automation_id": 7, "units": 20, "reason": "r"}`
	hdr := http.Header{"Idempotency-Key": {"pay-1"}}

	first := serve(h, "POST", "/admin/ledger/credit", body, hdr)
	second := serve(h, "POST", "/admin/ledger/credit", body, hdr)
	if first.Code != http.StatusOK || second.Code != http.StatusOK {
		t.Fatalf("got statuses %d and %d, want 200 twice", first.Code, second.Code)
	}
	if first.Body.String() != second.Body.String() {
		t.Errorf("replay answered %s, want the first answer %s", second.Body, first.Body)
	}
	if a := account(t, st, acctID); a.PaidTokens != 20 {
		t.Errorf("got paid %d after a replay, want 20 (credited once)", a.PaidTokens)
	}

	// The same key with another request conflicts and changes nothing.
	other := serve(h, "POST", "/admin/ledger/credit",
		`{"user_automation_id": 7, "units": 21}`, hdr)
	if other.Code != http.StatusConflict {
		t.Errorf("got status %d for a reused key, want 409: %s", other.Code, other.Body)
	}
	detail(t, other)

	// Without a key every call credits.
	for range 2 {
		if rec := serve(h, "POST", "/admin/ledger/credit", body, nil); rec.Code != 200 {
			t.Fatalf("got status %d, want 200: %s", rec.Code, rec.Body)
		}
	}
	if a := account(t, st, acctID); a.PaidTokens != 60 {
		t.Errorf("got paid %d, want 60", a.PaidTokens)
	}
}

// TestCreditInvalidKeyIsClientError sends keys the ledger refuses as
// invalid: the caller made the mistake, so the answer must be a 400.
func TestCreditInvalidKeyIsClientError(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)
	body := `{"user_automation_id": 7, "units": 5}`
	for _, key := range []string{strings.Repeat("k", 256), "clé"} {
		rec := serve(h, "POST", "/admin/ledger/credit", body,
			http.Header{"Idempotency-Key": {key}})
		if rec.Code != http.StatusBadRequest {
			t.Errorf("key of %d bytes: got status %d, want 400: %s",
				len(key), rec.Code, rec.Body)
		}
	}
	if a := account(t, st, acctID); a.PaidTokens != 0 {
		t.Errorf("got paid %d, want 0", a.PaidTokens)
	}
}

// seedJournal adds credits of 1..n units to acctID; with the provision
// the journal then holds n+1 entries.
func seedJournal(t *testing.T, l metering.Ledger, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		_, err := l.Credit(context.Background(), metering.CreditRequest{
			UserAutomationID: acctID, Units: int64(i), Reason: fmt.Sprint("c", i),
		})
		if err != nil {
			t.Fatalf("credit %d: %v", i, err)
		}
	}
}

// decodeEntries parses an NDJSON journal export.
func decodeEntries(t *testing.T, body []byte) []metering.Entry {
	t.Helper()
	var out []metering.Entry
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var e metering.Entry
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %q is not an entry: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func seqs(es []metering.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestJournal(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	seedJournal(t, st, 4) // seq 1 provision, 2..5 credits
	h := newHandler(st)
	tests := []struct {
		query string
		want  []uint64
	}{
		{"", []uint64{1, 2, 3, 4, 5}},
		{"?after=0&limit=0", []uint64{1, 2, 3, 4, 5}},
		{"?after=2", []uint64{3, 4, 5}},
		{"?limit=2", []uint64{1, 2}},
		{"?after=1&limit=3", []uint64{2, 3, 4}},
		{"?after=5", nil},
		{"?after=99&limit=1", nil},
	}
	for _, tt := range tests {
		rec := serve(h, "GET", "/admin/ledger/journal"+tt.query, "", nil)
		if rec.Code != http.StatusOK {
			t.Errorf("%q: got status %d, want 200", tt.query, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/x-ndjson" {
			t.Errorf("%q: got Content-Type %q, want application/x-ndjson", tt.query, ct)
		}
		got := seqs(decodeEntries(t, rec.Body.Bytes()))
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%q: got seqs %v, want %v", tt.query, got, tt.want)
		}
	}

	// The entries carry what happened.
	rec := serve(h, "GET", "/admin/ledger/journal?after=2&limit=1", "", nil)
	es := decodeEntries(t, rec.Body.Bytes())
	if len(es) != 1 || es[0].Kind != metering.EntryCredit || es[0].PaidDelta != 2 ||
		es[0].Reason != "c2" || es[0].UserAutomationID != acctID {
		t.Errorf("got %+v, want the credit of 2 units with reason c2", es)
	}
}

func TestJournalBadQuery(t *testing.T) {
	t.Parallel()
	h := newHandler(openLedger(t))
	for _, q := range []string{"after=-1", "after=x", "limit=-2", "limit=1.5",
		"after=9223372036854775808", "limit=99999999999999999999"} {
		rec := serve(h, "GET", "/admin/ledger/journal?"+q, "", nil)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: got status %d, want 400", q, rec.Code)
			continue
		}
		detail(t, rec)
	}
}

func TestLedgerClosed(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	rec := serve(h, "GET", "/admin/ledger/accounts/7", "", nil)
	if rec.Code != http.StatusInternalServerError || detail(t, rec) != "ledger error" {
		t.Errorf("show: got %d %s, want 500 with a fixed detail", rec.Code, rec.Body)
	}
	rec = serve(h, "POST", "/admin/ledger/credit", `{"user_automation_id":7,"units":1}`, nil)
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("credit: got %d, want 500", rec.Code)
	}

	// A failed export ends with an error line, so a reader knows.
	rec = serve(h, "GET", "/admin/ledger/journal", "", nil)
	if !strings.Contains(rec.Body.String(), `"error":"journal export failed"`) {
		t.Errorf("journal: got %q, want a trailing error line", rec.Body)
	}
}

func TestRoutesMethodsAndWrap(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	mux := http.NewServeMux()
	var wrapped []string
	admin.Register(mux, st, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wrapped = append(wrapped, r.Method+" "+r.URL.Path)
			if r.Header.Get("X-Zimmer-Service-Token") != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	})

	tests := []struct {
		method, target, body string
		token                bool
		want                 int
	}{
		{"GET", "/admin/ledger/accounts/7", "", false, http.StatusUnauthorized},
		{"GET", "/admin/ledger/accounts/7", "", true, http.StatusOK},
		{"POST", "/admin/ledger/credit", `{"user_automation_id":7,"units":1}`, false,
			http.StatusUnauthorized},
		{"POST", "/admin/ledger/credit", `{"user_automation_id":7,"units":1}`, true,
			http.StatusOK},
		{"GET", "/admin/ledger/journal", "", false, http.StatusUnauthorized},
		{"GET", "/admin/ledger/journal", "", true, http.StatusOK},
		{"POST", "/admin/ledger/accounts/7", "", true, http.StatusMethodNotAllowed},
		{"GET", "/admin/ledger/credit", "", true, http.StatusMethodNotAllowed},
		{"DELETE", "/admin/ledger/journal", "", true, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		hdr := http.Header{}
		if tt.token {
			hdr.Set("X-Zimmer-Service-Token", "s3cret")
		}
		rec := serve(mux, tt.method, tt.target, tt.body, hdr)
		if rec.Code != tt.want {
			t.Errorf("%s %s (token %v): got %d, want %d",
				tt.method, tt.target, tt.token, rec.Code, tt.want)
		}
	}
	if len(wrapped) != 6 {
		t.Errorf("wrap saw %d requests, want 6 (every allowed call): %q", len(wrapped), wrapped)
	}
	if a := account(t, st, acctID); a.PaidTokens != 1 {
		t.Errorf("got paid %d, want 1 (only the authenticated credit)", a.PaidTokens)
	}
}

// FuzzCredit sends arbitrary bodies and keys: every answer is JSON with a
// status a client can act on, never a 500, and only a 200 changes the
// balance.
func FuzzCredit(f *testing.F) {
	f.Add(`{"user_automation_id": 7, "units": 5}`, "")
	f.Add(`{"user_automation_id": 7, "units": 5, "reason": "x"}`, "k1")
	f.Add(`{"user_automation_id": 7, "units": 0}`, "k1")
	f.Add(`{"user_automation_id": 8, "units": 5}`, "")
	f.Add(`{"user_automation_id": 7, "units": 9223372036854775807}`, "")
	f.Add(`{"user_automation_id": 7e0, "units": 1}`, "")
	f.Add(`{"user_automation_id": 7, "units": 5}{"x":1}`, "k2")
	f.Add(`{`, "")
	f.Add(`null`, "")
	st := openLedger(f)
	h := newHandler(st)
	f.Fuzz(func(t *testing.T, body, key string) {
		hdr := http.Header{}
		if key != "" {
			hdr.Set("Idempotency-Key", key)
		}
		before := account(t, st, acctID)
		rec := serve(h, "POST", "/admin/ledger/credit", body, hdr)
		after := account(t, st, acctID)
		switch rec.Code {
		case http.StatusOK:
			var a metering.Account
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatalf("200 with body %q: %v", rec.Body, err)
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict:
			detail(t, rec)
			if after != before {
				t.Fatalf("refused credit changed %+v into %+v", before, after)
			}
		default:
			t.Fatalf("got status %d for body %q key %q: %s", rec.Code, body, key, rec.Body)
		}
	})
}

// testServer runs the admin API on a loopback httptest server; token,
// when not empty, is required in X-Zimmer-Service-Token.
func testServer(t *testing.T, l metering.Ledger, token string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	var wrap func(http.Handler) http.Handler
	if token != "" {
		wrap = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Zimmer-Service-Token") != token {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnauthorized)
					_, _ = io.WriteString(w, `{"detail":"Invalid service token"}`)
					return
				}
				next.ServeHTTP(w, r)
			})
		}
	}
	admin.Register(mux, l, wrap)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	srv := testServer(t, st, "")
	c := &admin.Client{Base: srv.URL, HTTP: srv.Client()}

	a, err := c.Account(acctID)
	if err != nil || a.DemoTokens != 5 || a.UserID != 70 {
		t.Fatalf("Account: got %+v, %v; want demo 5 user 70", a, err)
	}

	body := admin.CreditBody{UserAutomationID: acctID, Units: 30, Reason: "top-up"}
	for range 2 {
		a, err = c.Credit(body, "inv-9")
		if err != nil || a.PaidTokens != 30 {
			t.Fatalf("Credit: got %+v, %v; want paid 30", a, err)
		}
	}
	if a, err = c.Credit(body, ""); err != nil || a.PaidTokens != 60 {
		t.Fatalf("Credit without key: got %+v, %v; want paid 60", a, err)
	}

	var buf bytes.Buffer
	if err := c.Journal(1, &buf); err != nil {
		t.Fatalf("Journal: %v", err)
	}
	es := decodeEntries(t, buf.Bytes())
	if got := seqs(es); fmt.Sprint(got) != "[2 3]" {
		t.Errorf("Journal(1): got seqs %v, want [2 3]", got)
	}
	if len(es) == 2 && (es[0].IdempotencyKey != "inv-9" || es[0].Reason != "top-up") {
		t.Errorf("got first credit %+v, want key inv-9 and reason top-up", es[0])
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	srv := testServer(t, st, "")

	c := &admin.Client{Base: srv.URL}
	_, err := c.Account(8)
	if err == nil || !strings.Contains(err.Error(), "404") ||
		!strings.Contains(err.Error(), "unknown user_automation_id") {
		t.Errorf("Account(8): got %v, want an error with the 404 and its detail", err)
	}
	_, err = c.Credit(admin.CreditBody{UserAutomationID: acctID, Units: -1}, "")
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("Credit(-1): got %v, want a 400 error", err)
	}

	// Nothing listens: a transport error, wrapped.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	c = &admin.Client{Base: down.URL}
	if _, err := c.Account(acctID); err == nil ||
		!strings.Contains(err.Error(), "call admin api") {
		t.Errorf("got %v, want a call admin api error", err)
	}
	if err := c.Journal(0, io.Discard); err == nil {
		t.Error("Journal against a closed server: got nil error")
	}
}

func TestClientSendsToken(t *testing.T) {
	t.Parallel()
	const token = "admin-tok-3f9a"
	st := openLedger(t)
	srv := testServer(t, st, token)

	anon := &admin.Client{Base: srv.URL}
	if _, err := anon.Account(acctID); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without token: got %v, want a 401 error", err)
	}
	authed := &admin.Client{Base: srv.URL, Token: token}
	if _, err := authed.Account(acctID); err != nil {
		t.Errorf("with token: %v", err)
	}
	if err := authed.Journal(0, io.Discard); err != nil {
		t.Errorf("journal with token: %v", err)
	}
}

// TestCreditNeedsJSON: a browser can send text/plain cross-site without a
// preflight, so credit refuses anything but application/json.
func TestCreditNeedsJSON(t *testing.T) {
	t.Parallel()
	st := openLedger(t)
	h := newHandler(st)
	body := `{"user_automation_id": 7, "units": 5}`
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", ""} {
		rec := serve(h, "POST", "/admin/ledger/credit", body,
			http.Header{"Content-Type": {ct}})
		if rec.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: got %d, want 415", ct, rec.Code)
		}
	}
	rec := serve(h, "POST", "/admin/ledger/credit", body,
		http.Header{"Content-Type": {"application/json; charset=utf-8"}})
	if rec.Code != http.StatusOK {
		t.Errorf("application/json with charset: got %d, want 200", rec.Code)
	}
}
