package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadiness(t *testing.T) {
	t.Parallel()
	var r Readiness
	steps := []struct {
		name     string
		do       func()
		wantCode int
		wantBody string
	}{
		{"zero value", func() {}, 503, `"starting"`},
		{"ready", func() { r.SetReady(true) }, 200, `"ready"`},
		{"not ready again", func() { r.SetReady(false) }, 503, `"starting"`},
		{"ready again", func() { r.SetReady(true) }, 200, `"ready"`},
		{"shutting down", r.SetShuttingDown, 503, `"shutting_down"`},
		{"never comes back", func() { r.SetReady(true) }, 503, `"shutting_down"`},
	}
	for _, s := range steps {
		s.do()
		rec := httptest.NewRecorder()
		r.ReadyzHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != s.wantCode || !strings.Contains(rec.Body.String(), s.wantBody) {
			t.Errorf("%s: got %d %s, want %d %s",
				s.name, rec.Code, rec.Body, s.wantCode, s.wantBody)
		}
		if got := r.Ready(); got != (s.wantCode == 200) {
			t.Errorf("%s: Ready() = %v", s.name, got)
		}

		// Liveness holds through all of it.
		rec = httptest.NewRecorder()
		r.LivezHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/livez", nil))
		if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"alive"}` {
			t.Errorf("%s: livez got %d %s", s.name, rec.Code, rec.Body)
		}
	}
}

func TestReadinessMethods(t *testing.T) {
	t.Parallel()
	var r Readiness
	for _, h := range []http.Handler{r.LivezHandler(), r.ReadyzHandler()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
		if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST: got %d Allow %q, want 405 GET, HEAD",
				rec.Code, rec.Header().Get("Allow"))
		}
	}
}
