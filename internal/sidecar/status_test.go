package sidecar

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestStatusPage: the admin listener serves the status page, and the
// public listener's traffic shows in its per-endpoint figures.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	for i := 0; i < 3; i++ {
		h.do("GET", h.publicURL()+"/health", "", nil)
	}
	h.do("POST", h.publicURL()+"/provision", `{"user_automation_id":7,"user_id":1}`, nil)

	page := h.do("GET", h.adminURL()+"/status", "", nil)
	if page.status != http.StatusOK || page.header.Get("Content-Type") == "" {
		t.Fatalf("GET /status: got %d %q", page.status, page.header.Get("Content-Type"))
	}
	a := h.do("GET", h.adminURL()+"/status?format=json", "", nil)
	var rep struct {
		Endpoints []struct {
			Endpoint string `json:"endpoint"`
			Requests uint64 `json:"requests"`
		} `json:"endpoints"`
		Breakers []struct {
			Name, State string
		} `json:"breakers"`
	}
	if err := json.Unmarshal([]byte(a.body), &rep); err != nil {
		t.Fatalf("status JSON: %v: %s", err, a.body)
	}
	got := map[string]uint64{}
	for _, e := range rep.Endpoints {
		got[e.Endpoint] = e.Requests
	}
	if got["health"] < 3 || got["provision"] != 1 {
		t.Errorf("endpoint figures: got %v, want health >= 3 and provision 1", got)
	}
	if len(rep.Breakers) != 1 || rep.Breakers[0].Name != "app" {
		t.Errorf("breakers: got %+v, want the app's", rep.Breakers)
	}
}
