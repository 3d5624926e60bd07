package outbox

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminRig is an outbox with one pending report, one unknown consume and
// one failed report, behind its admin handler mounted at /outbox.
type adminRig struct {
	store *BoltStore
	ob    *Outbox
	srv   *httptest.Server
}

func newAdminRig(t *testing.T) *adminRig {
	t.Helper()
	store := openBoltAt(t, filepath.Join(t.TempDir(), "o.db"), 0, nil)
	ob := New(store, Options{Consume: true, Now: func() time.Time { return t0 }})
	mustAdd(t, store, consumeItem(1, t0), reportItem(2, t0), reportItem(3, t0))
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 2}
	mustClaim(t, store, c)
	mustFinish(t, store, "a",
		Outcome{ID: "consume:" + recordID(1), State: StateUnknown, Next: t0, Error: "reset"},
		Outcome{ID: "report:" + recordID(2), State: StateFailed, Next: t0, Error: "status 422"})
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", ob.AdminHandler()))
	mux.Handle("/outbox", http.StripPrefix("/outbox", ob.AdminHandler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &adminRig{store: store, ob: ob, srv: srv}
}

// do sends a request and decodes the JSON answer into v (when not nil).
func (a *adminRig) do(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q", method, path, ct)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestAdminList(t *testing.T) {
	a := newAdminRig(t)
	tests := []struct {
		path      string
		status    int
		wantItems []string
	}{
		{"/outbox", 200, []string{"consume:" + recordID(1), "report:" + recordID(2),
			"report:" + recordID(3)}},
		{"/outbox/", 200, []string{"consume:" + recordID(1), "report:" + recordID(2),
			"report:" + recordID(3)}},
		{"/outbox/?state=unknown", 200, []string{"consume:" + recordID(1)}},
		{"/outbox/?kind=report&state=failed", 200, []string{"report:" + recordID(2)}},
		{"/outbox/?limit=1", 200, []string{"consume:" + recordID(1)}},
		{"/outbox/?kind=lease", 400, nil},
		{"/outbox/?state=done", 400, nil},
		{"/outbox/?limit=0", 400, nil},
		{"/outbox/?limit=1001", 400, nil},
		{"/outbox/items", 404, nil},
	}
	for _, tt := range tests {
		var ans listAnswer
		if got := a.do(t, http.MethodGet, tt.path, "", &ans); got != tt.status {
			t.Fatalf("GET %s: got %d, want %d", tt.path, got, tt.status)
		}
		if tt.status != 200 {
			continue
		}
		if got := strings.Join(ids(ans.Items), ","); got != strings.Join(tt.wantItems, ",") {
			t.Errorf("GET %s: got %s, want %v", tt.path, got, tt.wantItems)
		}
		if ans.Stats.Total != 3 || ans.Stats.Consume.Unknown != 1 || ans.Stats.Report.Failed != 1 {
			t.Errorf("GET %s: stats %+v", tt.path, ans.Stats)
		}
	}
	var ans listAnswer
	a.do(t, http.MethodGet, "/outbox/?state=unknown", "", &ans)
	if it := ans.Items[0]; it.LastError != "reset" || it.Attempts != 1 || it.Record.Units != 5 {
		t.Fatalf("listed item: got %+v", it)
	}
	if got := a.do(t, http.MethodPost, "/outbox/", "", nil); got != 405 {
		t.Fatalf("POST /: got %d, want 405", got)
	}
}

func TestAdminResolve(t *testing.T) {
	a := newAdminRig(t)
	tests := []struct {
		name, body string
		status     int
	}{
		{"malformed", `{"id":`, 400},
		{"unknown field", `{"id":"report:1","action":"drop","why":1}`, 400},
		{"bad id", `{"id":"lease:1","action":"drop"}`, 400},
		{"bad action", `{"id":"report:` + recordID(2) + `","action":"retry"}`, 400},
		{"no such item", `{"id":"report:` + recordID(9) + `","action":"drop"}`, 404},
		{"pending", `{"id":"report:` + recordID(3) + `","action":"drop"}`, 409},
		{"requeue unknown", `{"id":"consume:` + recordID(1) + `","action":"requeue"}`, 200},
		{"drop failed", `{"id":"report:` + recordID(2) + `","action":"drop"}`, 200},
	}
	for _, tt := range tests {
		if got := a.do(t, http.MethodPost, "/outbox/resolve", tt.body, nil); got != tt.status {
			t.Fatalf("%s: got %d, want %d", tt.name, got, tt.status)
		}
	}
	st := mustStats(t, a.store)
	if st.Total != 2 || st.Consume.Pending != 1 || st.Report.Pending != 1 {
		t.Fatalf("after resolving: %+v, want the consume pending and the failed report gone", st)
	}
	select {
	case <-a.ob.wake:
	default:
		t.Fatal("a requeue did not wake the deliverer")
	}
	if got := a.do(t, http.MethodGet, "/outbox/resolve", "", nil); got != 405 {
		t.Fatalf("GET /resolve: got %d, want 405", got)
	}
}

func TestAdminStoreClosed(t *testing.T) {
	a := newAdminRig(t)
	_ = a.store.Close()
	if got := a.do(t, http.MethodGet, "/outbox/", "", nil); got != 503 {
		t.Fatalf("list: got %d, want 503", got)
	}
	body := `{"id":"consume:` + recordID(1) + `","action":"drop"}`
	if got := a.do(t, http.MethodPost, "/outbox/resolve", body, nil); got != 503 {
		t.Fatalf("resolve: got %d, want 503", got)
	}
}
