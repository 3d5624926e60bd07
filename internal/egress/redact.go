package egress

import (
	"bytes"
	"sync"
)

// MaxRememberedKeys is how many distinct injected keys the handler keeps
// cutting out of error answers and logs; the oldest is forgotten first.
const MaxRememberedKeys = 4096

// minRun is the shortest run of a key's characters that is cut out.
const minRun = 8

// redactMark replaces each cut.
const redactMark = "[REDACTED]"

// keyRedactor cuts injected keys, and every run of minRun or more of
// their characters, out of text. It is safe for concurrent use.
type keyRedactor struct {
	mu    sync.RWMutex
	keys  map[string]struct{} // guarded by mu
	order []string            // guarded by mu; oldest first
	grams map[string]int      // guarded by mu; minRun-grams of keys, counted
}

func newKeyRedactor() *keyRedactor {
	return &keyRedactor{keys: map[string]struct{}{}, grams: map[string]int{}}
}

// add remembers key.
func (r *keyRedactor) add(key string) {
	if key == "" {
		return
	}
	r.mu.RLock()
	_, known := r.keys[key]
	r.mu.RUnlock()
	if known {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, known := r.keys[key]; known {
		return
	}
	if len(r.order) >= MaxRememberedKeys {
		r.forget(r.order[0])
		r.order = r.order[1:]
	}
	r.keys[key] = struct{}{}
	r.order = append(r.order, key)
	for i := 0; i+minRun <= len(key); i++ {
		r.grams[key[i:i+minRun]]++
	}
}

// forget drops key (mu held).
func (r *keyRedactor) forget(key string) {
	delete(r.keys, key)
	for i := 0; i+minRun <= len(key); i++ {
		g := key[i : i+minRun]
		if r.grams[g]--; r.grams[g] <= 0 {
			delete(r.grams, g)
		}
	}
}

// bytes returns b with every remembered key, and every run of minRun or
// more characters that are consecutive in one of them, replaced by
// redactMark. b itself is not changed.
func (r *keyRedactor) bytes(b []byte) []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.keys) == 0 {
		return b
	}

	// Mark every byte covered by a key's minRun-gram; a run of minRun or
	// more consecutive key characters is covered whole. Keys shorter
	// than minRun are matched whole.
	cut := make([]bool, len(b))
	found := false
	for i := 0; i+minRun <= len(b); i++ {
		if _, ok := r.grams[string(b[i:i+minRun])]; ok {
			for j := i; j < i+minRun; j++ {
				cut[j] = true
			}
			found = true
		}
	}
	for k := range r.keys {
		if len(k) >= minRun {
			continue
		}
		for off := 0; ; {
			i := bytes.Index(b[off:], []byte(k))
			if i < 0 {
				break
			}
			for j := off + i; j < off+i+len(k); j++ {
				cut[j] = true
			}
			found = true
			off += i + len(k)
		}
	}
	if !found {
		return b
	}

	// Replace each marked run once.
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		if !cut[i] {
			out = append(out, b[i])
			i++
			continue
		}
		out = append(out, redactMark...)
		for i < len(b) && cut[i] {
			i++
		}
	}
	return out
}

// string is bytes for a string.
func (r *keyRedactor) string(s string) string {
	out := r.bytes([]byte(s))
	return string(out)
}
