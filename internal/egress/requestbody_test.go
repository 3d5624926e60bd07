package egress

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// doTyped sends a request with exactly the Content-Type given ("" for
// none) and returns the answer with its body read.
func (e *env) doTyped(path, contentType, body string, hdr http.Header) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), "POST", e.srv.URL+path,
		strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read answer: %v", err)
	}
	return resp, string(b)
}

// A request field of the right JSON syntax but a bad value gets 400
// naming the field, in OpenAI's shape with its param.
func TestFieldErrorsNamed(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, nil)
	tests := []struct {
		body, field, problem string
	}{
		{`{"model":"m","n":0}`, "n", "at least 1"},
		{`{"model":"m","max_tokens":-1}`, "max_tokens", "negative"},
		{`{"model":"m","max_tokens":"5"}`, "max_tokens", "not a string"},
		{`{"model":"m","max_completion_tokens":5.5}`, "max_completion_tokens", "whole number"},
		{`{"model":"m","max_output_tokens":1e18}`, "max_output_tokens", "whole number"},
		{`{"model":"m","max_tokens":99999999999999999999}`, "max_tokens", "too large"},
		{`{"model":"m","n":true}`, "n", "integer"},
		{`{"model":1}`, "model", "string"},
		{`{"model":"m","stream":"yes"}`, "stream", "true, false or null"},
		{`{"model":"m","stream":true,"stream":false}`, "stream", "more than once"},
		{`{"model":"m","stream":true,"stream_options":[]}`, "stream_options", "object"},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":1}}`,
			"stream_options.include_usage", "true, false or null"},
	}
	for _, tt := range tests {
		resp, body := e.do("POST", "/v1/chat/completions", tt.body, nil)
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", tt.body, resp.StatusCode)
			continue
		}
		var got struct {
			Error struct {
				Message string  `json:"message"`
				Param   *string `json:"param"`
				Code    string  `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		msg := got.Error.Message
		if !strings.Contains(msg, tt.field) || !strings.Contains(msg, tt.problem) ||
			got.Error.Param == nil || *got.Error.Param != tt.field ||
			got.Error.Code != "invalid_request_body" {
			t.Errorf("%s: got %s, want param %s and a message naming it and %q",
				tt.body, body, tt.field, tt.problem)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	e.wait()
}

// C-type: a JSON body is metered whatever its Content-Type says: a
// stream is made to ask for usage, and a charged call is reserved from
// its max_tokens.
func TestJSONDetectedByBody(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", ""} {
		t.Run("type "+ct, func(t *testing.T) {
			t.Parallel()
			up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
				startStream(w)
				_, _ = io.WriteString(w, sseChunk)
				if asksUsage(t, s.Body) {
					_, _ = io.WriteString(w, sseUsage)
				}
				_, _ = io.WriteString(w, sseDone)
			})
			budget := newBudget(t, map[int64]int64{5: 1 << 30})
			e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
			body := ` {"model":"m","stream":true,"max_tokens":1000,"messages":[]}`
			resp, got := e.doTyped("/v1/chat/completions", ct, body,
				http.Header{DefaultUserHeader: {"5"}})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, got)
			}
			if up := seen.all()[0].Body; !asksUsage(t, up) {
				t.Errorf("the upstream was not asked for usage: %s", up)
			}
			if want := sseChunk + sseDone; got != want {
				t.Errorf("app got %q, want %q (the usage chunk withheld)", got, want)
			}
			e.wait()
			rec := e.sink.only(t)
			h := budget.hold(rec.ID)
			sent := seen.all()[0].Body // with stream_options added
			if wantReserved := int64(len(sent)+3)/4 + 1000; h.reserved != wantReserved {
				t.Errorf("reserved %d, want %d (from max_tokens)", h.reserved, wantReserved)
			}
			if !rec.UsageKnown || rec.Units != 12 || h.settled != 12 {
				t.Errorf("record %+v, hold %+v: want 12 units settled from the usage", rec, h)
			}
		})
	}
}

// A body the egress cannot read, compressed, is refused with 415.
func TestCompressedRequestRefused(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, nil)
	for _, enc := range []string{"gzip", "br", "deflate, gzip"} {
		resp, body := e.do("POST", "/v1/chat/completions", "\x1f\x8b\x08\x00",
			http.Header{"Content-Encoding": {enc}})
		if resp.StatusCode != 415 ||
			decodeError(t, body).Error.Code != "unsupported_content_encoding" {
			t.Errorf("%s: got %d %s, want 415 unsupported_content_encoding",
				enc, resp.StatusCode, body)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	resp, _ := e.do("POST", "/v1/chat/completions", chatBody,
		http.Header{"Content-Encoding": {"identity"}})
	if resp.StatusCode != 200 {
		t.Errorf("identity: status %d, want 200", resp.StatusCode)
	}
	e.wait()
}

// On a metered endpoint a body must be a JSON object the egress reads;
// elsewhere a body that is not JSON (an upload) passes as it is.
func TestNonJSONBodies(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	e := newEnv(t, up.URL, 1, nil)
	for _, body := range []string{"hello", "\xef\xbb\xbf{\"model\":\"m\"}", `["x"]`} {
		resp, got := e.doTyped("/v1/chat/completions", "text/plain", body, nil)
		if resp.StatusCode != 400 || decodeError(t, got).Error.Code != "invalid_request_body" {
			t.Errorf("%q: got %d %s, want 400 invalid_request_body", body, resp.StatusCode, got)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	const form = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" +
		"whisper-1\r\n--b--\r\n"
	resp, _ := e.doTyped("/v1/audio/transcriptions", "multipart/form-data; boundary=b", form, nil)
	if resp.StatusCode != 200 || len(seen.all()) != 1 || seen.all()[0].Body != form {
		t.Errorf("upload: status %d, want it passed on unchanged", resp.StatusCode)
	}
	e.wait()
}
