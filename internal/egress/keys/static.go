package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// StaticKey is one configured key.
type StaticKey struct {
	// Source is a secret-free label of where the key came from, such as
	// "env:OPENAI_API_KEY" or "file:/run/secrets/openai#2". It names the
	// key in events, errors and status pages.
	Source string
	// Key is the resolved key.
	Key Secret
	// Limits are the key's local limits; zero fields are unlimited.
	Limits Limits
}

// Static is a Pool of configured keys. A key disabled by a 401/403 stays
// disabled for the pool's life (a configuration reload builds a new pool);
// an exhausted key comes back at the next UTC midnight.
type Static struct {
	opts Options

	mu   sync.Mutex
	keys []*keyState // guarded by mu, as is every keyState
}

var _ Pool = (*Static)(nil)

// Errors of NewStatic.
var (
	errNoKeys = errors.New("no keys configured")
)

// NewStatic returns a pool of keys. It refuses an empty list, an empty
// key, the same key twice and negative limits; errors name keys by
// position and Source, never by value.
func NewStatic(keys []StaticKey, opts Options) (*Static, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("static keys: %w", errNoKeys)
	}
	p := &Static{opts: opts.withDefaults()}
	seen := make(map[string]int, len(keys))
	for i, k := range keys {
		label := fmt.Sprintf("key %d (%s)", i+1, k.Source)
		switch {
		case k.Key.IsZero():
			return nil, fmt.Errorf("static keys: %s: empty key", label)
		case k.Limits.RPM < 0 || k.Limits.DailyTokens < 0:
			return nil, fmt.Errorf("static keys: %s: negative limit", label)
		}
		if j, dup := seen[k.Key.Reveal()]; dup {
			return nil, fmt.Errorf("static keys: %s: same key as key %d", label, j)
		}
		seen[k.Key.Reveal()] = i + 1
		p.keys = append(p.keys, &keyState{
			id: int64(i + 1), name: k.Source, secret: k.Key, limits: k.Limits,
		})
	}
	return p, nil
}

// Acquire implements Pool.
func (p *Static) Acquire(ctx context.Context, _ string, maxTokens int64) (Lease, error) {
	if err := contextErr(ctx); err != nil {
		return Lease{}, err
	}
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	k, why := pick(p.keys, now, maxTokens)
	if k == nil {
		return Lease{}, why.result(now, nil)
	}
	t := k.admit(now, maxTokens)
	return Lease{KeyID: k.id, Name: k.name, Key: k.secret, t: t}, nil
}

// Report implements Pool.
func (p *Static) Report(l Lease, o Outcome) {
	t, ok := l.claim()
	if !ok {
		return
	}
	now := p.opts.Now()
	p.mu.Lock()
	events := t.st.settle(t, o, now, p.opts)
	p.mu.Unlock()
	p.opts.emit(events)
}

// Status returns a snapshot of every key, in configuration order.
func (p *Static) Status() []KeyStatus {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]KeyStatus, 0, len(p.keys))
	for _, k := range p.keys {
		out = append(out, k.status(now))
	}
	return out
}
