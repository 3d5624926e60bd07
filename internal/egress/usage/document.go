package usage

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// maxCapture caps the bytes kept of a top-level "model" or "usage" value.
const maxCapture = 64 << 10

// maxKey caps the raw bytes kept of a top-level key; longer keys are
// neither "model" nor "usage" and are skipped.
const maxKey = 64

type docState uint8

const (
	docStart    docState = iota // before the opening brace
	docKey                      // expecting a key or the closing brace
	docKeyStr                   // inside a key
	docColon                    // expecting the colon after a key
	docValStart                 // expecting a value
	docVal                      // inside a value
	docAfterVal                 // expecting a comma or the closing brace
	docEnd                      // after the closing brace
	docBad                      // not a well-formed object
)

// docScanner follows one JSON object as its bytes arrive and keeps only
// its top-level "model" and "usage" values, so an answer of any size
// (embeddings can run to many megabytes) is metered in bounded memory.
// It checks the object's outline (braces, keys, commas), not every value:
// a defect inside a skipped value goes unnoticed, one inside a kept value
// fails its decoding.
type docScanner struct {
	st     docState
	key    []byte
	keyEsc bool // the key holds an escape
	keyBig bool // the key passed maxKey

	target  int // 0 skip, 1 model, 2 usage: where the value goes
	buf     []byte
	big     bool // the kept value passed maxCapture
	started bool // the value's first byte was seen
	scalar  bool // the value is a number or a literal
	depth   int
	inStr   bool
	esc     bool

	model     string
	usage     Usage
	err       error // first failure
	seen      bool  // a non-space byte arrived
	truncated bool  // the input ended inside the object
}

const (
	targetNone = iota
	targetModel
	targetUsage
)

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// feed consumes p.
func (d *docScanner) feed(p []byte) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch d.st {
		case docStart:
			if isSpace(c) {
				continue
			}
			d.seen = true
			if c != '{' {
				d.fail(ErrNotObject)
				return
			}
			d.st = docKey
		case docKey:
			if isSpace(c) {
				continue
			}
			if c == '}' {
				d.st = docEnd
				continue
			}
			if c != '"' {
				d.fail(fmt.Errorf("%w: key expected", ErrNotObject))
				return
			}
			d.key, d.keyEsc, d.keyBig, d.esc = d.key[:0], false, false, false
			d.st = docKeyStr
		case docKeyStr:
			d.keyByte(c)
		case docColon:
			if isSpace(c) {
				continue
			}
			if c != ':' {
				d.fail(fmt.Errorf("%w: colon expected", ErrNotObject))
				return
			}
			d.target = d.keyTarget()
			d.st = docValStart
		case docValStart:
			if isSpace(c) {
				continue
			}
			d.buf, d.big, d.started = d.buf[:0], false, false
			d.scalar, d.depth, d.inStr, d.esc = false, 0, false, false
			d.st = docVal
			i = d.value(p, i)
		case docVal:
			i = d.value(p, i)
		case docAfterVal:
			if isSpace(c) {
				continue
			}
			switch c {
			case ',':
				d.st = docKey
			case '}':
				d.st = docEnd
			default:
				d.fail(fmt.Errorf("%w: comma expected", ErrNotObject))
				return
			}
		case docEnd:
			if !isSpace(c) {
				d.fail(fmt.Errorf("%w: data after the object", ErrNotObject))
				return
			}
		case docBad:
			return
		}
	}
}

// keyByte adds one byte of a key, ending it at the closing quote.
func (d *docScanner) keyByte(c byte) {
	switch {
	case d.esc:
		d.esc = false
	case c == '\\':
		d.esc, d.keyEsc = true, true
	case c == '"':
		d.st = docColon
		return
	}
	if len(d.key) < maxKey {
		d.key = append(d.key, c)
	} else {
		d.keyBig = true
	}
}

// keyTarget names where the value of the key just read goes. A key with
// escapes is unescaped first, as a JSON decoder would.
func (d *docScanner) keyTarget() int {
	if d.keyBig {
		return targetNone
	}
	key := string(d.key)
	if d.keyEsc {
		quoted := make([]byte, 0, len(d.key)+2)
		quoted = append(append(append(quoted, '"'), d.key...), '"')
		if json.Unmarshal(quoted, &key) != nil {
			return targetNone
		}
	}
	switch key {
	case "model":
		return targetModel
	case "usage":
		return targetUsage
	}
	return targetNone
}

// value consumes bytes of the current value from p[i:] and returns the
// index of the last byte it consumed (i-1 when it consumed none).
func (d *docScanner) value(p []byte, i int) int {
	for ; i < len(p); i++ {
		c := p[i]
		if d.inStr {
			if !d.esc {
				k := bytes.IndexAny(p[i:], "\"\\")
				if k < 0 {
					d.keep(p[i:])
					return len(p) - 1
				}
				d.keep(p[i : i+k])
				i += k
				c = p[i]
			}
			d.keep(p[i : i+1])
			switch {
			case d.esc:
				d.esc = false
			case c == '\\':
				d.esc = true
			case d.depth == 0:
				d.inStr = false
				d.finish()
				return i
			default:
				d.inStr = false
			}
			continue
		}

		if !d.started {
			d.started = true
			switch c {
			case '"':
				d.inStr = true
			case '{', '[':
				d.depth = 1
			default:
				d.scalar = true
			}
			d.keep(p[i : i+1])
			continue
		}
		if d.scalar {
			if c == ',' || c == '}' || isSpace(c) {
				d.finish()
				return i - 1
			}
			d.keep(p[i : i+1])
			continue
		}

		d.keep(p[i : i+1])
		switch c {
		case '"':
			d.inStr = true
		case '{', '[':
			d.depth++
		case '}', ']':
			d.depth--
			if d.depth == 0 {
				d.finish()
				return i
			}
		}
	}
	return len(p) - 1
}

// keep adds b to the kept value when the value is kept.
func (d *docScanner) keep(b []byte) {
	if d.target == targetNone || d.big {
		return
	}
	if len(d.buf)+len(b) > maxCapture {
		d.big = true
		return
	}
	d.buf = append(d.buf, b...)
}

// finish ends the current value and decodes it when it is kept. A later
// duplicate key replaces an earlier one, as in encoding/json.
func (d *docScanner) finish() {
	d.st = docAfterVal
	switch {
	case d.target == targetNone:
		return
	case d.big:
		d.fail(fmt.Errorf("top-level value: %w", ErrTooLarge))
		d.st = docAfterVal // the outline is still followed
		return
	case d.target == targetModel:
		var m *string
		if err := json.Unmarshal(d.buf, &m); err != nil {
			d.fail(fmt.Errorf("decode model: %w", jsonErr(err)))
			d.st = docAfterVal
			return
		}
		d.model = ""
		if m != nil {
			d.model = *m
		}
	case d.target == targetUsage:
		u, err := decodeUsage(d.buf, "")
		if err != nil {
			d.fail(err)
			d.st = docAfterVal
			return
		}
		d.usage = u
	}
}

// fail records the first failure; outline failures stop the scan.
func (d *docScanner) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.st = docBad
}

// end finishes the scan at the end of the input and returns the usage
// and the first failure. An empty input is no document and no failure.
func (d *docScanner) end() (Usage, error) {
	if d.st != docEnd && d.st != docBad && d.seen {
		d.truncated = true
		d.fail(fmt.Errorf("document: %w", ErrTruncated))
	}
	u := d.usage
	if u.Found {
		u.Model = d.model
	}
	return u, d.err
}

// FromJSON reads the usage of a JSON answer of the chat completions,
// completions, embeddings or Responses API: its top-level "usage" and
// "model". An answer without usage (an error object, for one) gives
// Found false and no error; a body that is not a JSON object, or whose
// usage is malformed, gives an error.
func FromJSON(body []byte) (Usage, error) {
	var d docScanner
	d.feed(body)
	return d.end()
}
