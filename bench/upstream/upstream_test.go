package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestServeAnswersFixedJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	serve(rec, httptest.NewRequest(http.MethodPost, "/any", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != string(answer) {
		t.Errorf("got %d %q, want 200 and the fixed answer", rec.Code, rec.Body.String())
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got)
	}
	if n := len(answer); n < 180 || n > 220 {
		t.Errorf("answer is %d bytes, want about 200", n)
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"[::1]:8080", true},
		{":8080", false},
		{"0.0.0.0:80", false},
		{"10.1.2.3:80", false},
		{"localhost:80", false},
		{"nonsense", false},
	}
	for _, tt := range tests {
		if err := checkLoopback(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
		}
	}
}

func TestPlainProxyForwards(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(serve))
	t.Cleanup(app.Close)
	h, err := newPlainProxy(app.URL)
	if err != nil {
		t.Fatalf("newPlainProxy: %v", err)
	}
	front := httptest.NewServer(h)
	t.Cleanup(front.Close)

	resp, err := http.Get(front.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != string(answer) {
		t.Errorf("got %d %q, want 200 and the app's answer", resp.StatusCode, body)
	}
}

func TestPlainProxyRefusesNonLoopback(t *testing.T) {
	for _, target := range []string{"http://10.0.0.1/", "https://127.0.0.1/",
		"http://example.com/", "::bad"} {
		if _, err := newPlainProxy(target); err == nil {
			t.Errorf("newPlainProxy(%q): got nil error, want one", target)
		}
	}
}

func TestServeStreamsEvents(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(serve))
	t.Cleanup(app.Close)
	resp, err := http.Get(app.URL + "/stream/x?events=4&gap=0s")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	want := "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\n"
	if resp.StatusCode != http.StatusOK || string(body) != want {
		t.Errorf("got %d %q, want 200 and four events", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
}

func TestServeStreamRefusesUnboundedParams(t *testing.T) {
	for _, q := range []string{"events=0", "events=1001", "events=x", "gap=2s", "gap=-1s"} {
		rec := httptest.NewRecorder()
		serve(rec, httptest.NewRequest(http.MethodGet, "/stream?"+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: got %d, want 400", q, rec.Code)
		}
	}
}
