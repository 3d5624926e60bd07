package fakeopenai

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNodeOpenAI checks that the npm "openai" package parses the fake's
// answers. It runs only when FAKEOPENAI_NODE_MODULES names a node_modules
// directory holding that package and node is installed (the package is
// not vendored here).
func TestNodeOpenAI(t *testing.T) {
	t.Parallel()
	modules := os.Getenv("FAKEOPENAI_NODE_MODULES")
	node, err := exec.LookPath("node")
	if modules == "" || err != nil {
		t.Skip("set FAKEOPENAI_NODE_MODULES (and install node) to run the npm client check")
	}
	// Gzip: node's fetch asks for it and decodes it.
	s, ts := newTest(t, Options{Words: 3, Gzip: true})
	cmd := exec.CommandContext(t.Context(), node, "testdata/openai_smoke.cjs", ts.URL+"/v1",
		testKey)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node: %v: %s", err, stderr)
	}

	var got struct {
		Chat, ChatStream, Responses, ResponsesStream struct {
			Text  string
			Usage map[string]any
		}
		Embeddings struct {
			Count int
			First float64
			Usage map[string]any
		}
		Error struct {
			Status     int
			Code, Type string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node output: %v: %s", err, out)
	}
	// "say hello please": 1+3 = 4 prompt tokens; "hi there": 1+2 = 3.
	for name, c := range map[string]struct {
		text        string
		usage       map[string]any
		field, want string
	}{
		"chat":        {got.Chat.Text, got.Chat.Usage, "total_tokens", "7"},
		"chat stream": {got.ChatStream.Text, got.ChatStream.Usage, "total_tokens", "7"},
		"responses":   {got.Responses.Text, got.Responses.Usage, "total_tokens", "6"},
		"responses stream": {
			got.ResponsesStream.Text, got.ResponsesStream.Usage, "total_tokens", "6",
		},
	} {
		if c.text != "w1 w2 w3" {
			t.Errorf("%s: text %q, want %q", name, c.text, "w1 w2 w3")
		}
		if v, _ := json.Marshal(c.usage[c.field]); string(v) != c.want {
			t.Errorf("%s: %s %s, want %s (usage %v)", name, c.field, v, c.want, c.usage)
		}
	}
	if got.Embeddings.Count != 2 || got.Embeddings.First != 1 {
		t.Errorf("embeddings: got %+v, want 2, the second starting at 1", got.Embeddings)
	}
	if h := s.Requests()[0].Header; !acceptsGzip(h) {
		t.Errorf("Accept-Encoding %q: the gzip path was not exercised", h.Get("Accept-Encoding"))
	}
	emb := s.Requests()[2]
	if !strings.Contains(string(emb.Body), `"encoding_format":"base64"`) {
		t.Errorf("embeddings request %s: want the npm default, base64", emb.Body)
	}
	if got.Error.Status != 401 || got.Error.Code != "invalid_api_key" {
		t.Errorf("error: got %+v, want 401 invalid_api_key", got.Error)
	}
}
