package usage

import "bytes"

// DefaultMaxEventBytes is the event size cap used when none is given.
const DefaultMaxEventBytes = 1 << 20

// utf8BOM may open a stream; it is not part of the first field name.
var utf8BOM = []byte("\xef\xbb\xbf")

// Event is one dispatched server-sent event.
type Event struct {
	// Type is the value of the last "event:" field, "" when none was sent.
	Type string

	// ID is the last event id seen on the stream so far ("id:" fields
	// persist from one event to the next, as in the SSE specification).
	ID string

	// Data is the event's "data:" lines joined by "\n". It is valid only
	// during the callback; copy it to keep it.
	Data []byte
}

// Framer splits a server-sent event stream into events as its bytes
// arrive, whatever the read boundaries.
//
// Lines end with "\n", "\r" or "\r\n" (a "\r" and its "\n" may come in
// different writes); a blank line ends an event; "data:" lines are joined
// with "\n"; comment lines (":") and unknown fields are ignored; one
// leading UTF-8 byte order mark is ignored. A block of lines without data
// dispatches nothing. An unterminated event at the end of the input is
// never dispatched (see Pending).
//
// The content bytes of one event (line terminators not counted) are
// capped: an event that grows past the cap is dropped without buffering
// the rest, counted in Oversize, and framing resumes after its blank
// line. Memory is bounded by twice the cap.
//
// A Framer is not safe for concurrent use.
type Framer struct {
	onEvent func(Event)
	// onBlock, when set, is called after every blank line with the offset
	// just past it in the current Write; the body tap uses it to forward
	// or withhold whole events.
	onBlock func(end int)
	// onOversize, when set, is called when the current event passes the
	// cap.
	onOversize func()

	max  int
	line []byte // the current line, without its terminator
	data []byte // data lines of the current event, each with "\n"

	typ, id   string
	hasData   bool
	pendingCR bool // the last byte was "\r": a "\n" next is its partner
	size      int  // content bytes of the current event
	lineLen   int  // length of the current line while skipping
	skipping  bool // the current event passed the cap
	started   bool // the first line has ended (BOM handled)

	events   int64
	oversize int64
}

// NewFramer returns a Framer that calls onEvent for every event, with
// maxEventBytes as the cap (DefaultMaxEventBytes when zero or negative).
// onEvent must not retain Event.Data.
func NewFramer(maxEventBytes int, onEvent func(Event)) *Framer {
	if maxEventBytes <= 0 {
		maxEventBytes = DefaultMaxEventBytes
	}
	return &Framer{onEvent: onEvent, max: maxEventBytes}
}

// Write frames p. It never fails and always consumes all of p.
func (f *Framer) Write(p []byte) (int, error) {
	f.feed(p)
	return len(p), nil
}

// Events is the number of events dispatched so far.
func (f *Framer) Events() int64 { return f.events }

// Oversize is the number of events dropped for passing the size cap.
func (f *Framer) Oversize() int64 { return f.oversize }

// Pending reports whether an unterminated line, data of an undispatched
// event, or an oversize event being skipped is pending: at the end of a
// stream, true means the stream was cut inside an event.
func (f *Framer) Pending() bool {
	return len(f.line) > 0 || f.hasData || f.skipping
}

// feed consumes p, line by line.
func (f *Framer) feed(p []byte) {
	i := 0
	for i < len(p) {
		// The "\n" of a "\r\n" split across writes, or adjacent here.
		if f.pendingCR {
			f.pendingCR = false
			if p[i] == '\n' {
				i++
				continue
			}
		}

		j := bytes.IndexAny(p[i:], "\r\n")
		if j < 0 {
			f.appendLine(p[i:])
			return
		}
		f.appendLine(p[i : i+j])
		f.pendingCR = p[i+j] == '\r'
		i += j + 1
		f.endLine(i)
	}
}

// appendLine adds content bytes to the current line, or only counts them
// once the event is over the cap.
func (f *Framer) appendLine(b []byte) {
	if len(b) == 0 {
		return
	}
	if f.skipping {
		f.lineLen += len(b)
		return
	}
	f.size += len(b)
	if f.size > f.max {
		f.startSkipping(len(f.line) + len(b))
		return
	}
	f.line = appendCapped(f.line, b, f.max)
}

// appendCapped appends b to buf; when buf must grow, its capacity grows
// to at most limit (or exactly what is needed, if more), so a capped
// buffer never holds more than its cap.
func appendCapped(buf, b []byte, limit int) []byte {
	if n := len(buf) + len(b); n > cap(buf) {
		c := min(max(2*cap(buf), n, 64), max(limit, n))
		grown := make([]byte, len(buf), c)
		copy(grown, buf)
		buf = grown
	}
	return append(buf, b...)
}

var lf = []byte{'\n'}

// startSkipping drops the current event's buffers and skips to its end.
func (f *Framer) startSkipping(lineLen int) {
	f.skipping = true
	f.lineLen = lineLen
	f.oversize++
	f.line = f.line[:0]
	f.data = f.data[:0]
	f.hasData = false
	f.typ = ""
	if f.onOversize != nil {
		f.onOversize()
	}
}

// endLine handles a complete line; end is the offset just past its
// terminator in the current Write.
func (f *Framer) endLine(end int) {
	first := !f.started
	f.started = true
	if f.skipping {
		blank := f.lineLen == 0
		f.lineLen = 0
		if blank {
			f.skipping = false
			f.size = 0
			f.block(end)
		}
		return
	}

	line := f.line
	f.line = f.line[:0]
	if first {
		line = bytes.TrimPrefix(line, utf8BOM)
	}
	if len(line) == 0 {
		f.dispatch(end)
		return
	}
	f.field(line)
}

// field applies one non-blank line to the current event.
func (f *Framer) field(line []byte) {
	if line[0] == ':' {
		return
	}
	name, value := line, []byte(nil)
	if k := bytes.IndexByte(line, ':'); k >= 0 {
		name, value = line[:k], line[k+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		// A data line adds fewer bytes than its own content ("data"
		// is 4 bytes), so data never outgrows the capped content.
		f.data = appendCapped(f.data, value, f.max)
		f.data = appendCapped(f.data, lf, f.max)
		f.hasData = true
	case "event":
		f.typ = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			f.id = string(value)
		}
	}
}

// dispatch ends the current event at a blank line.
func (f *Framer) dispatch(end int) {
	if f.hasData {
		f.events++
		if f.onEvent != nil {
			f.onEvent(Event{
				Type: f.typ,
				ID:   f.id,
				Data: f.data[:len(f.data)-1],
			})
		}
	}
	f.data = f.data[:0]
	f.hasData = false
	f.typ = ""
	f.size = 0
	f.block(end)
}

func (f *Framer) block(end int) {
	if f.onBlock != nil {
		f.onBlock(end)
	}
}
