package health

import (
	"encoding/json"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"ok", 200, `{"status":"ok","version":"1","uptime":3}`, ClassHealthy},
		{"healthy", 200, `{"status":"healthy","version":1,"uptime":null}`, ClassHealthy},
		{"up", 200, `{"status":"up","version":"1","uptime":"x"}`, ClassHealthy},
		{"escaped ok", 200, `{"status":"o\u006b","version":"1","uptime":3}`, ClassHealthy},
		{"extra keys", 200, `{"status":"ok","version":"1","uptime":3,"checks":{}}`, ClassHealthy},
		{"degraded", 200, `{"status":"degraded","version":"1","uptime":3}`, ClassDegraded},
		{"case matters", 200, `{"status":"OK","version":"1","uptime":3}`, ClassDegraded},
		{"status null", 200, `{"status":null,"version":"1","uptime":3}`, ClassDegraded},
		{"status number", 200, `{"status":1,"version":"1","uptime":3}`, ClassDegraded},
		{"status list", 200, `{"status":["ok"],"version":"1","uptime":3}`, ClassDegraded},
		{"last duplicate wins", 200,
			`{"status":"ok","status":"bad","version":"1","uptime":3}`, ClassDegraded},
		{"503", 503, `{"status":"ok","version":"1","uptime":3}`, ClassUnhealthy},
		{"201", 201, `{"status":"ok","version":"1","uptime":3}`, ClassUnhealthy},
		{"301", 301, `{"status":"ok","version":"1","uptime":3}`, ClassUnhealthy},
		{"no uptime", 200, `{"status":"ok","version":"1"}`, ClassUnhealthy},
		{"no version", 200, `{"status":"ok","uptime":1}`, ClassUnhealthy},
		{"key case", 200, `{"Status":"ok","version":"1","uptime":3}`, ClassUnhealthy},
		{"not json", 200, `ok`, ClassUnhealthy},
		{"empty", 200, ``, ClassUnhealthy},
		{"null", 200, `null`, ClassUnhealthy},
		{"array", 200, `["status","version","uptime"]`, ClassUnhealthy},
		{"string", 200, `"status version uptime"`, ClassUnhealthy},
		{"trailing garbage", 200, `{"status":"ok","version":"1","uptime":3} x`, ClassUnhealthy},
		{"bad utf8", 200, "{\"status\":\"ok\",\"version\":\"\xff\",\"uptime\":3}", ClassUnhealthy},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(200, []byte(`{"status":"ok","version":"1","uptime":3}`))
	f.Add(200, []byte(`{"status":"nope","version":"1","uptime":3}`))
	f.Add(200, []byte(`{"status":"ok"}`))
	f.Add(503, []byte(`{"status":"down","version":"1","uptime":3}`))
	f.Add(200, []byte(`[1,2]`))
	f.Add(200, []byte("\xef\xbb\xbf{}"))
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		got := Classify(code, body)
		switch got {
		case ClassHealthy, ClassDegraded, ClassUnhealthy:
		default:
			t.Fatalf("got class %q", got)
		}
		if code != 200 && got != ClassUnhealthy {
			t.Fatalf("status %d: got %s, want unhealthy", code, got)
		}
		if got == ClassUnhealthy {
			return
		}
		// Anything not unhealthy is a JSON object with the three keys,
		// and healthy exactly when status is one of the three strings.
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("%s for a body that is not a JSON object: %v", got, err)
		}
		for _, k := range []string{"status", "version", "uptime"} {
			if _, ok := obj[k]; !ok {
				t.Fatalf("%s without key %q", got, k)
			}
		}
		s, _ := obj["status"].(string)
		healthy := s == "ok" || s == "healthy" || s == "up"
		if healthy != (got == ClassHealthy) {
			t.Fatalf("status %q: got %s", s, got)
		}
	})
}

// FuzzClassifyBuilt builds bodies from parts so the fuzzer reaches the
// healthy and degraded branches often, and checks the exact class.
func FuzzClassifyBuilt(f *testing.F) {
	f.Add("ok", "1.0", true, true, true)
	f.Add("up", "", true, false, true)
	f.Add("broken", "2", true, true, false)
	f.Fuzz(func(t *testing.T, status, version string, hasStatus, hasVersion, hasUptime bool) {
		obj := map[string]any{"extra": []int{1}}
		if hasStatus {
			obj["status"] = status
		}
		if hasVersion {
			obj["version"] = version
		}
		if hasUptime {
			obj["uptime"] = 12
		}
		body, err := json.Marshal(obj)
		if err != nil {
			t.Skip()
		}
		want := ClassUnhealthy
		if hasStatus && hasVersion && hasUptime {
			// json.Marshal turns invalid UTF-8 into U+FFFD, so compare
			// with what was actually sent.
			var sent struct{ Status string }
			if err := json.Unmarshal(body, &sent); err != nil {
				t.Fatal(err)
			}
			want = ClassDegraded
			switch sent.Status {
			case "ok", "healthy", "up":
				want = ClassHealthy
			}
		}
		if got := Classify(200, body); got != want {
			t.Fatalf("%s: got %s, want %s", body, got, want)
		}
	})
}
