package config

import (
	"sort"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex maps key paths to the 1-based line where the file defines them.
type lineIndex map[string]int

// lineOf returns the line of path p, or of its nearest ancestor the file
// defines (the [section] of a missing key), or 0.
func (x lineIndex) lineOf(p string) int {
	for ; p != ""; p = parentPath(p) {
		if l, ok := x[p]; ok {
			return l
		}
	}
	return 0
}

// indexer walks the TOML syntax tree a second time, after the document has
// been decoded, to learn where each key path is written.
type indexer struct {
	p      unstable.Parser
	lines  lineIndex
	arrays map[string]int // array-of-tables path -> entries seen so far
	nl     []int          // offsets of the newlines in the document
}

// indexLines returns the line of every key path in data. It expects data
// that already parsed; on a syntax error it returns what it found so far.
func indexLines(data []byte) lineIndex {
	x := &indexer{lines: lineIndex{}, arrays: map[string]int{}}
	x.p.Reset(data)
	for i, c := range data {
		if c == '\n' {
			x.nl = append(x.nl, i)
		}
	}
	table := ""
	for x.p.NextExpression() {
		e := x.p.Expression()
		switch e.Kind {
		case unstable.Table:
			table = x.header(e, false)
		case unstable.ArrayTable:
			table = x.header(e, true)
		case unstable.KeyValue:
			x.keyValue(table, e)
		}
	}
	return x.lines
}

// line returns the line where r starts.
func (x *indexer) line(r unstable.Range) int {
	return sort.SearchInts(x.nl, int(r.Offset)) + 1
}

// set records the line of p unless an earlier line is known.
func (x *indexer) set(p string, line int) {
	if _, ok := x.lines[p]; !ok {
		x.lines[p] = line
	}
}

// descend appends key to p, stepping into the latest entry when p.key is
// an array of tables.
func (x *indexer) descend(p, key string) string {
	p = joinKey(p, key)
	if n := x.arrays[p]; n > 0 {
		p = joinIndex(p, n-1)
	}
	return p
}

// header handles [a.b] and [[a.b]] and returns the table's path.
func (x *indexer) header(e *unstable.Node, array bool) string {
	var parts []*unstable.Node
	it := e.Key()
	for it.Next() {
		parts = append(parts, it.Node())
	}
	p := ""
	for i, k := range parts {
		line := x.line(k.Raw)
		if i < len(parts)-1 || !array {
			p = x.descend(p, string(k.Data))
			x.set(p, line)
			continue
		}
		p = joinKey(p, string(k.Data))
		x.set(p, line)
		n := x.arrays[p]
		x.arrays[p] = n + 1
		p = joinIndex(p, n)
		x.set(p, line)
	}
	return p
}

// keyValue records a (possibly dotted) key under table and the keys of
// its value.
func (x *indexer) keyValue(table string, kv *unstable.Node) {
	p, line := table, 0
	it := kv.Key()
	for it.Next() {
		k := it.Node()
		line = x.line(k.Raw)
		p = joinKey(p, string(k.Data))
		x.set(p, line)
	}
	x.value(p, kv.Value(), line)
}

// value records the keys inside inline tables and the entries of arrays.
func (x *indexer) value(p string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				x.keyValue(p, n)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			n := it.Node()
			if n.Kind == unstable.Comment {
				continue
			}
			l := line
			if n.Raw.Length > 0 {
				l = x.line(n.Raw)
			}
			ep := joinIndex(p, i)
			x.set(ep, l)
			x.value(ep, n, l)
			i++
		}
	}
}
