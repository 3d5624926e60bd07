package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Options configure a Meter or a Body.
type Options struct {
	// Stream: the answer is a server-sent event stream
	// (text/event-stream); otherwise it is one JSON document.
	Stream bool

	// StripUsageChunk (Body in stream mode only): withhold from the reader
	// every usage-only chat/completions chunk (empty choices, usage set),
	// still recording its usage. Set it when PrepareRequest reported that
	// the app did not ask for usage.
	StripUsageChunk bool

	// MaxEventBytes caps one event's content bytes in stream mode;
	// DefaultMaxEventBytes when zero or negative.
	MaxEventBytes int
}

// Result is what a Meter read from an answer.
type Result struct {
	// Usage is the last usage the answer reported; in a stream where
	// several events carry usage (some compatible servers send running
	// totals), the last one wins.
	Usage Usage

	// Events is the number of stream events read (0 for JSON answers).
	Events int64

	// Failures counts what could not be read: events or documents that
	// are not valid JSON or carry a malformed usage, events over the size
	// cap, and an input cut inside an event or a document (once Closed).
	Failures int64

	// Oversize counts the events among Failures that passed the cap.
	Oversize int64

	// Stripped counts the usage-only chunks withheld from the app.
	Stripped int64

	// Done: the stream sent "data: [DONE]".
	Done bool

	// Truncated: the input ended inside an event or a document (known
	// once the Meter is closed).
	Truncated bool

	// EOF (Body only): the upstream body ended cleanly.
	EOF bool

	// Err is the first failure, for logs: it names what failed and never
	// holds the answer's bytes. Nil when Failures is zero.
	Err error
}

// Meter reads the token usage of one upstream answer from its bytes, as
// an io.Writer: give it every byte the upstream sent, in order, split
// anywhere (io.TeeReader does this), then Close it. It never fails a
// Write and never changes or delays the bytes, which it only observes.
//
// A Meter is safe for concurrent use: Result may be called while another
// goroutine writes.
type Meter struct {
	mu     sync.Mutex
	framer *Framer     // stream mode
	doc    *docScanner // JSON mode
	res    Result
	closed bool

	// usageOnly is set by observe for the event just framed; the Body's
	// strip logic reads and clears it.
	usageOnly bool
}

// NewMeter returns a Meter for one answer.
func NewMeter(opts Options) *Meter {
	m := &Meter{}
	if opts.Stream {
		m.framer = NewFramer(opts.MaxEventBytes, m.observe)
		m.framer.onOversize = m.oversize
	} else {
		m.doc = &docScanner{}
	}
	return m
}

// Write observes p. It always returns len(p), nil; bytes written after
// Close are ignored.
func (m *Meter) Write(p []byte) (int, error) {
	m.mu.Lock()
	m.write(p)
	m.mu.Unlock()
	return len(p), nil
}

// write observes p with m.mu held.
func (m *Meter) write(p []byte) {
	if m.closed {
		return
	}
	if m.framer != nil {
		m.framer.feed(p)
		return
	}
	m.doc.feed(p)
}

// Close marks the end of the answer: an event or document cut short is
// counted (Truncated), and a JSON answer's usage is settled. It is
// idempotent and always returns nil.
func (m *Meter) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.close()
	return nil
}

func (m *Meter) close() {
	if m.closed {
		return
	}
	m.closed = true
	if m.framer != nil {
		if m.framer.Pending() {
			m.res.Truncated = true
			m.fail(fmt.Errorf("stream: %w", ErrTruncated))
		}
		return
	}
	u, err := m.doc.end()
	if u.Found {
		m.res.Usage = u
	}
	if err != nil {
		m.res.Truncated = m.doc.truncated
		m.fail(err)
	}
}

// Result returns what has been read so far; the Usage of a JSON answer is
// known once the Meter is closed.
func (m *Meter) Result() Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.res
	if m.framer != nil {
		r.Events = m.framer.Events()
		r.Oversize = m.framer.Oversize()
	}
	return r
}

var doneData = []byte("[DONE]")

// observe reads one framed event (m.mu held, called by the Framer).
func (m *Meter) observe(ev Event) {
	m.usageOnly = false
	data := bytes.TrimSpace(ev.Data)
	if len(data) == 0 {
		return
	}
	if bytes.Equal(data, doneData) {
		m.res.Done = true
		return
	}

	// Most events are content deltas: once the model is known, an event
	// that cannot name a usage is only checked to be a JSON object.
	if m.res.Usage.Model != "" && !mayHoldUsage(data) {
		if data[0] != '{' || !json.Valid(data) {
			n := m.framer.Events()
			m.fail(fmt.Errorf("event %d: %w", n, errNotJSONObject))
		}
		return
	}

	u, usageOnly, err := chunkUsage(data)
	if err != nil {
		n := m.framer.Events()
		m.fail(fmt.Errorf("event %d: %w", n, err))
		return
	}
	if u.Found {
		if u.Model == "" {
			u.Model = m.res.Usage.Model
		}
		m.res.Usage = u
		m.usageOnly = usageOnly
		return
	}
	if m.res.Usage.Model == "" && !m.res.Usage.Found {
		m.res.Usage.Model = u.Model
	}
}

// oversize counts an event dropped for its size (m.mu held).
func (m *Meter) oversize() {
	m.usageOnly = false
	m.fail(fmt.Errorf("event %d: %w", m.framer.Events()+1, ErrTooLarge))
}

// fail counts one failure and keeps the first error (m.mu held).
func (m *Meter) fail(err error) {
	m.res.Failures++
	if m.res.Err == nil {
		m.res.Err = err
	}
}

var errNotJSONObject = errors.New("decode event: not a JSON object")

// mayHoldUsage reports whether data could name a non-null "usage"
// member as encoding/json would read it: the word in any case, or any \u
// escape (which could spell it). The exact form "usage":null, which
// OpenAI puts in every chunk of a stream that reports usage, is no usage.
func mayHoldUsage(data []byte) bool {
	for i := 0; i+5 <= len(data); i++ {
		j := bytes.IndexAny(data[i:], "uU\\")
		if j < 0 {
			return false
		}
		i += j
		if data[i] == '\\' {
			if i+1 < len(data) && data[i+1] == 'u' {
				return true
			}
			continue
		}
		if i+5 > len(data) || !bytes.EqualFold(data[i:i+5], usageWord) {
			continue
		}
		if i > 0 && data[i-1] == '"' && bytes.HasPrefix(data[i:], usageNull) {
			i += len(usageNull) - 1
			continue
		}
		return true
	}
	return false
}

var (
	usageWord = []byte("usage")
	usageNull = []byte(`usage":null`)
)
