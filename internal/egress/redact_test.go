package egress

import (
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/usage"
)

func TestKeyRedactor(t *testing.T) {
	t.Parallel()
	r := newKeyRedactor()
	key := testKeys[0] // sk-proj-AAAAaaaa1111bbbb2222cccc3333dddd4444
	r.add(key)
	r.add(key) // twice is once
	r.add("short")
	tests := []struct {
		name, in, want string
	}{
		{"whole key", "key " + key + ".", "key " + redactMark + "."},
		{"prefix run", "sk-proj-AAAAa***4444", redactMark + "***4444"},
		{"inner run of 8", "x1111bbbb2y", "x" + redactMark + "y"},
		{"run of 7 stays", "x1111bbby", "x1111bbby"},
		{"short key whole", "a short key", "a " + redactMark + " key"},
		{"nothing", "no secret here", "no secret here"},
		{"twice", key + "|" + key, redactMark + "|" + redactMark},
	}
	for _, tt := range tests {
		if got := r.string(tt.in); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestKeyRedactorForgetsOldest(t *testing.T) {
	t.Parallel()
	r := newKeyRedactor()
	first := "sk-first-0123456789abcdefghij"
	r.add(first)
	for i := range MaxRememberedKeys {
		r.add(strings.Repeat("z", 10) + string(rune('A'+i%26)) + strings.Repeat("q", i%7) +
			"-" + string(rune(0x100+i)))
	}
	if got := r.string(first); got != first {
		t.Errorf("the oldest key is still cut after %d newer ones: %q", MaxRememberedKeys, got)
	}
	if n := len(r.keys); n != MaxRememberedKeys {
		t.Errorf("remembers %d keys, want %d", n, MaxRememberedKeys)
	}
}

// FuzzKeyRedactor: whatever surrounds them, no run of 8 characters of a
// remembered key survives.
func FuzzKeyRedactor(f *testing.F) {
	f.Add("prefix", 0, 40, "suffix")
	f.Add("", 3, 11, "x")
	f.Add("sk-proj-", 8, 16, "sk-proj-")
	f.Fuzz(func(t *testing.T, before string, from, to int, after string) {
		key := testKeys[1]
		from, to = clamp(from, len(key)), clamp(to, len(key))
		if from > to {
			from, to = to, from
		}
		r := newKeyRedactor()
		r.add(key)
		out := r.string(before + key[from:to] + after)
		for i := 0; i+minRun <= len(key); i++ {
			if strings.Contains(out, key[i:i+minRun]) {
				t.Fatalf("run %q survived in %q", key[i:i+minRun], out)
			}
		}
	})
}

func clamp(v, n int) int {
	if v < 0 {
		v = -v
	}
	if v < 0 { // the smallest int
		return 0
	}
	return v % (n + 1)
}

func TestReservationAndUnits(t *testing.T) {
	t.Parallel()
	h := &Handler{opts: Options{TokensPerUnit: 10, ReserveTokens: 500}}
	tests := []struct {
		name    string
		bodyLen int
		info    usage.RequestInfo
		want    int64
		wantOK  bool
	}{
		{"no cap", 40, usage.RequestInfo{N: 1}, 10 + 500, true},
		{"no cap times n", 0, usage.RequestInfo{N: 3}, 1500, true},
		{"cap", 41, usage.RequestInfo{N: 1, MaxTokens: 100}, 11 + 100, true},
		{"cap times n", 0, usage.RequestInfo{N: 3, MaxTokens: 100}, 300, true},
		{"largest cap", 0, usage.RequestInfo{N: 1, MaxTokens: 1<<63 - 1}, 1<<63 - 1, true},
		{"cap plus prompt overflows", 8, usage.RequestInfo{N: 1, MaxTokens: 1<<63 - 1},
			0, false},
		{"cap times n overflows", 0, usage.RequestInfo{N: 1 << 40, MaxTokens: 1 << 40},
			0, false},
	}
	for _, tt := range tests {
		got, ok := h.reservation(tt.bodyLen, tt.info)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: reservation %d %v, want %d %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
	for tokens, want := range map[int64]int64{0: 0, 1: 1, 10: 1, 11: 2, 75: 8, -3: 0} {
		if got := h.unitsFor(tokens); got != want {
			t.Errorf("unitsFor(%d) = %d, want %d", tokens, got, want)
		}
	}
}
