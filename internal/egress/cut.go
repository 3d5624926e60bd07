package egress

import (
	"bytes"
	"strings"
)

// streamCut masks the exact keys injected into one call in its 2xx
// answer as it passes to the app, read after read. Each key becomes a
// mask of the same length, so that a Content-Length stays true and a
// JSON string stays valid. The only bytes held back from a read are a
// tail that could begin a key (it never holds a line end, so a complete
// server-sent event is never delayed): they go out with the next read, or
// at the end (flush). A streamCut is owned by the request's goroutine.
type streamCut struct {
	keys [][]byte
	held []byte // the last read's tail, a proper prefix of a key
	buf  []byte // held + the next read
}

// newStreamCut returns a streamCut for keys; empty ones are ignored.
func newStreamCut(keys []string) *streamCut {
	c := &streamCut{}
	for _, k := range keys {
		if k != "" {
			c.keys = append(c.keys, []byte(k))
		}
	}
	return c
}

// next returns what of p (with the tail held before) may go to the app
// now, keys masked. It may change p and return a slice of it; the result
// is valid until the next call.
func (c *streamCut) next(p []byte) []byte {
	if len(c.keys) == 0 {
		return p
	}
	data := p
	if len(c.held) > 0 {
		c.buf = append(append(c.buf[:0], c.held...), p...)
		c.held = c.held[:0]
		data = c.buf
	}
	for _, k := range c.keys {
		maskAll(data, k)
	}
	t := c.tail(data)
	c.held = append(c.held, data[len(data)-t:]...)
	return data[:len(data)-t]
}

// flush returns the bytes still held, at the end of the answer.
func (c *streamCut) flush() []byte {
	h := c.held
	c.held = nil
	return h
}

// tail returns the length of the longest end of data that is a proper
// prefix of a key and holds no line end.
func (c *streamCut) tail(data []byte) int {
	longest := 0
	for _, k := range c.keys {
		from := max(len(data)-(len(k)-1), 0)
		for i := from; i < len(data); i++ {
			if data[i] == k[0] && bytes.HasPrefix(k, data[i:]) {
				longest = max(longest, len(data)-i)
				break
			}
		}
	}
	if longest > 0 && bytes.ContainsAny(data[len(data)-longest:], "\r\n") {
		return 0
	}
	return longest
}

// maskAll overwrites every occurrence of key in data with its mask.
func maskAll(data, key []byte) {
	for off := 0; ; {
		i := bytes.Index(data[off:], key)
		if i < 0 {
			return
		}
		copy(data[off+i:], maskFor(len(key)))
		off += i + len(key)
	}
}

// maskFor returns the mask of a key of n bytes: redactMark, padded with
// "*" or cut to n bytes.
func maskFor(n int) string {
	if n <= len(redactMark) {
		return strings.Repeat("*", n)
	}
	return redactMark + strings.Repeat("*", n-len(redactMark))
}
