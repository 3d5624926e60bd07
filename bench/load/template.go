package main

import (
	"fmt"
	"strconv"
	"strings"
)

// template is a request body with sequence placeholders, parsed once so
// that rendering a body costs one small allocation.
//
//	{seq}    the request's sequence number, from 1
//	{seq%N}  1 + seq mod N (N >= 1): an id in [1, N]
//
// Any other text, braces included, is copied as is.
type template struct {
	parts []part
	size  int // literal bytes, a hint for the buffer
}

// part is a literal (mod == 0) or a placeholder (lit empty, mod -1 for
// {seq}, else N for {seq%N}).
type part struct {
	lit string
	mod int64
}

// maxMod bounds N in {seq%N}.
const maxMod = 1 << 40

// parseTemplate splits s into literals and placeholders. It fails on a
// {seq%N} whose N is not an integer in [1, 2^40].
func parseTemplate(s string) (*template, error) {
	t := &template{}
	for s != "" {
		i := strings.Index(s, "{seq")
		if i < 0 {
			t.addLiteral(s)
			break
		}
		t.addLiteral(s[:i])
		rest := s[i+len("{seq"):]
		switch {
		case strings.HasPrefix(rest, "}"):
			t.parts = append(t.parts, part{mod: -1})
			s = rest[1:]
		case strings.HasPrefix(rest, "%"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed {seq%% placeholder")
			}
			n, err := strconv.ParseInt(rest[1:end], 10, 64)
			if err != nil || n < 1 || n > maxMod {
				return nil, fmt.Errorf("{seq%%N}: N must be an integer in [1, %d], got %q",
					int64(maxMod), rest[1:end])
			}
			t.parts = append(t.parts, part{mod: n})
			s = rest[end+1:]
		default:
			// "{seq" followed by something else is plain text.
			t.addLiteral("{seq")
			s = rest
		}
	}
	return t, nil
}

func (t *template) addLiteral(s string) {
	if s == "" {
		return
	}
	t.parts = append(t.parts, part{lit: s})
	t.size += len(s)
}

// empty reports whether the template renders no bytes.
func (t *template) empty() bool { return len(t.parts) == 0 }

// render returns the body for sequence number seq (seq >= 1).
func (t *template) render(seq int64) []byte {
	b := make([]byte, 0, t.size+20*len(t.parts))
	for _, p := range t.parts {
		switch {
		case p.lit != "":
			b = append(b, p.lit...)
		case p.mod < 0:
			b = strconv.AppendInt(b, seq, 10)
		default:
			b = strconv.AppendInt(b, 1+seq%p.mod, 10)
		}
	}
	return b
}
