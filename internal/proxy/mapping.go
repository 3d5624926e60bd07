package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Values are the request fields a template may name. A value is an int64,
// a string, a bool or nil (JSON null); the hooks fill them from the
// Zimmer request.
type Values map[string]any

// Template is a string with {name} placeholders, compiled once.
//
// A placeholder is "{" + identifier + "}" where an identifier is a letter
// or underscore followed by letters, digits or underscores. Every other
// brace is literal text, so JSON-looking strings need no escaping; a
// literal "{name}" with an identifier inside cannot be written. A Template
// is immutable and safe for concurrent use.
type Template struct {
	parts []tmplPart
	// whole is the name when the template is exactly one placeholder.
	whole string
}

// tmplPart is literal text or, when name is set, a placeholder.
type tmplPart struct {
	text string
	name string
}

// CompileTemplate compiles s. A placeholder naming anything outside names
// is an error, so a typo is found when the configuration loads.
func CompileTemplate(s string, names []string) (*Template, error) {
	t := &Template{}
	lit := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '{' {
			continue
		}
		name, ok := placeholderAt(s, i)
		if !ok {
			continue
		}
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("unknown field {%s} (known: %s)",
				name, strings.Join(names, ", "))
		}
		if i > lit {
			t.parts = append(t.parts, tmplPart{text: s[lit:i]})
		}
		t.parts = append(t.parts, tmplPart{name: name})
		i += len(name) + 1
		lit = i + 1
	}
	if lit < len(s) {
		t.parts = append(t.parts, tmplPart{text: s[lit:]})
	}
	if len(t.parts) == 1 && t.parts[0].name != "" {
		t.whole = t.parts[0].name
	}
	return t, nil
}

// placeholderAt reports the identifier of a placeholder starting at s[i].
func placeholderAt(s string, i int) (string, bool) {
	end := strings.IndexByte(s[i+1:], '}')
	if end <= 0 {
		return "", false
	}
	name := s[i+1 : i+1+end]
	for j := 0; j < len(name); j++ {
		c := name[j]
		letter := c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z')
		if !letter && (j == 0 || c < '0' || c > '9') {
			return "", false
		}
	}
	return name, true
}

// Render interpolates v as text: int64 in decimal, bool as true/false,
// nil as the empty string, strings unchanged. A name missing from v
// renders as nil.
func (t *Template) Render(v Values) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.text)
			continue
		}
		b.WriteString(textOf(v[p.name]))
	}
	return b.String()
}

// textOf is the text form of a field value.
func textOf(x any) string {
	switch x := x.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	default:
		return fmt.Sprint(x)
	}
}

// errBadPathValue: a value would change the shape of a rendered path.
var errBadPathValue = errors.New("empty, null or dot-segment value in a path")

// renderEscaped interpolates v with each value passed through escape.
// With forPath, a value that is empty, null, "." or ".." is an error:
// it would remove or climb a path segment.
func (t *Template) renderEscaped(v Values, escape func(string) string,
	forPath bool) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.text)
			continue
		}
		s := textOf(v[p.name])
		if forPath && (s == "" || s == "." || s == "..") {
			return "", fmt.Errorf("field %s: %w", p.name, errBadPathValue)
		}
		b.WriteString(escape(s))
	}
	return b.String(), nil
}

// BodyTemplate is a JSON body built from a TOML table, compiled once.
//
// Every string in the table (at any depth, keys excepted) is a Template.
// A string that is exactly one placeholder takes the field's JSON type
// (number, string, bool or null); any other string interpolates fields as
// text. Numbers, booleans, dates and nested tables and arrays are copied.
// A BodyTemplate is immutable and safe for concurrent use.
type BodyTemplate struct {
	root bodyNode
}

// bodyNode is one compiled JSON value.
type bodyNode interface {
	build(v Values) any
}

type (
	constNode struct{ v any }
	textNode  struct{ t *Template }
	objNode   map[string]bodyNode
	arrNode   []bodyNode
)

func (n constNode) build(Values) any { return n.v }

func (n textNode) build(v Values) any {
	if n.t.whole != "" {
		return v[n.t.whole]
	}
	return n.t.Render(v)
}

func (n objNode) build(v Values) any {
	m := make(map[string]any, len(n))
	for k, c := range n {
		m[k] = c.build(v)
	}
	return m
}

func (n arrNode) build(v Values) any {
	a := make([]any, len(n))
	for i, c := range n {
		a[i] = c.build(v)
	}
	return a
}

// maxBodyDepth bounds the nesting a body template may have.
const maxBodyDepth = 32

// CompileBody compiles a body template from a decoded TOML table. Values
// may be strings, booleans, integers, floats, time.Time, maps with string
// keys and slices of those; anything else is an error, as is a placeholder
// outside names.
func CompileBody(table map[string]any, names []string) (*BodyTemplate, error) {
	root, err := compileNode(reflect.ValueOf(table), names, 0)
	if err != nil {
		return nil, err
	}
	return &BodyTemplate{root: root}, nil
}

// compileNode compiles one value; reflection accepts every slice and map
// type a TOML or koanf decoder produces.
func compileNode(rv reflect.Value, names []string, depth int) (bodyNode, error) {
	if depth > maxBodyDepth {
		return nil, errors.New("body nested too deeply")
	}
	for rv.Kind() == reflect.Interface || rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return constNode{}, nil
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return constNode{}, nil
	}
	if t, ok := rv.Interface().(time.Time); ok {
		return constNode{v: t.Format(time.RFC3339Nano)}, nil
	}
	switch rv.Kind() {
	case reflect.String:
		t, err := CompileTemplate(rv.String(), names)
		if err != nil {
			return nil, err
		}
		return textNode{t: t}, nil
	case reflect.Bool:
		return constNode{v: rv.Bool()}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return constNode{v: rv.Int()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32,
		reflect.Uint64:
		return constNode{v: rv.Uint()}, nil
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("NaN and infinity have no JSON form")
		}
		return constNode{v: f}, nil
	case reflect.Map:
		return compileObject(rv, names, depth)
	case reflect.Slice, reflect.Array:
		a := make(arrNode, rv.Len())
		for i := range a {
			n, err := compileNode(rv.Index(i), names, depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			a[i] = n
		}
		return a, nil
	}
	return nil, fmt.Errorf("unsupported value of type %s", rv.Type())
}

// compileObject compiles a map with string keys.
func compileObject(rv reflect.Value, names []string, depth int) (bodyNode, error) {
	if rv.Type().Key().Kind() != reflect.String {
		return nil, fmt.Errorf("unsupported map key type %s", rv.Type().Key())
	}
	o := make(objNode, rv.Len())
	it := rv.MapRange()
	for it.Next() {
		k := it.Key().String()
		n, err := compileNode(it.Value(), names, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		o[k] = n
	}
	return o, nil
}

// Render builds the JSON body for v. Object keys come out sorted.
func (b *BodyTemplate) Render(v Values) ([]byte, error) {
	out, err := json.Marshal(b.root.build(v))
	if err != nil {
		return nil, fmt.Errorf("encode body: %w", err)
	}
	return out, nil
}

// urlTemplate is a call's path and optional query, compiled once. Path
// values are path-escaped (a "/" in a value cannot add a segment), query
// values query-escaped.
type urlTemplate struct {
	path  *Template
	query *Template // nil without a "?"
}

// compileURLTemplate compiles "/a/{x}/b?k={y}". The path must start with
// "/"; a fragment is an error.
func compileURLTemplate(s string, names []string) (*urlTemplate, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("path %q must start with /", s)
	}
	if strings.HasPrefix(s, "//") {
		// "//x" reads as a host, not a path, wherever a URL is parsed.
		return nil, fmt.Errorf("path %q must not start with //", s)
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == '#'
	}) >= 0 {
		return nil, fmt.Errorf("path %q has a fragment, space or control "+
			"character", s)
	}
	p, q, hasQuery := strings.Cut(s, "?")
	u := &urlTemplate{}
	var err error
	if u.path, err = CompileTemplate(p, names); err != nil {
		return nil, err
	}
	if hasQuery {
		if u.query, err = CompileTemplate(q, names); err != nil {
			return nil, err
		}
	}

	// Literal text must already be a valid escaped path and query.
	probe := Values{}
	for _, n := range names {
		probe[n] = "x"
	}
	if _, err := u.render(probe); err != nil {
		return nil, fmt.Errorf("path %q: %w", s, err)
	}
	return u, nil
}

// renderedURL is a rendered call target relative to the app's base URL.
type renderedURL struct {
	path     string // decoded
	rawPath  string // escaped
	rawQuery string
}

// render interpolates v into the path and query.
func (u *urlTemplate) render(v Values) (renderedURL, error) {
	var r renderedURL
	var err error
	if r.rawPath, err = u.path.renderEscaped(v, url.PathEscape, true); err != nil {
		return renderedURL{}, err
	}
	if r.path, err = url.PathUnescape(r.rawPath); err != nil {
		return renderedURL{}, fmt.Errorf("bad escape in path: %w", err)
	}
	if u.query == nil {
		return r, nil
	}
	r.rawQuery, err = u.query.renderEscaped(v, url.QueryEscape, false)
	if err != nil {
		return renderedURL{}, err
	}
	if _, err := url.ParseQuery(r.rawQuery); err != nil {
		return renderedURL{}, fmt.Errorf("bad query: %w", err)
	}
	return r, nil
}
