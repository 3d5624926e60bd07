package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// decoder copies the decoded TOML document (maps, slices and scalars, some
// replaced by envValue) into the typed Config, collecting a problem for
// every unknown key and wrong type instead of stopping at the first.
type decoder struct {
	origin   envOrigin
	secrets  secretSource
	problems []Problem
}

// addf records a problem at path p.
func (d *decoder) addf(p, format string, args ...any) {
	d.problems = append(d.problems, Problem{Path: p, Message: fmt.Sprintf(format, args...)})
}

// wrongType records that the value at p is not what the key needs. Values
// of secret keys are never shown.
func (d *decoder) wrongType(p, want string, v any, secret bool) {
	if secret {
		d.addf(p, "must be %s (got %s)", want, kindOf(v))
		return
	}
	d.addf(p, "must be %s (got %s)", want, describe(v))
}

// tomlKey returns the key a struct field is read from, or "" for none.
func tomlKey(f reflect.StructField) string {
	return f.Tag.Get("toml")
}

// keysOf lists the keys of a struct type in declaration order.
func keysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if k := tomlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// decodeStruct decodes table m into the struct rv. Keys are visited in
// sorted order so problems come out the same way each run.
func (d *decoder) decodeStruct(p string, m map[string]any, rv reflect.Value) {
	fields := map[string]reflect.Value{}
	t := rv.Type()
	for i := range t.NumField() {
		if k := tomlKey(t.Field(i)); k != "" {
			fields[k] = rv.Field(i)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kp := joinKey(p, k)
		f, ok := fields[k]
		if !ok {
			d.unknownKey(kp, k, keysOf(t))
			continue
		}
		d.decodeValue(kp, m[k], f)
	}
}

// unknownKey reports key at p, with the closest known key when one is
// near enough to be a typo, else the list of known keys.
func (d *decoder) unknownKey(p, key string, known []string) {
	if d.origin.of(p) != "" {
		// A single "_" where "__" was meant glues two levels together.
		for _, k := range known {
			if rest, ok := strings.CutPrefix(key, k+"_"); ok && rest != "" {
				d.addf(p, "unknown key; levels are joined by two underscores: did you "+
					"mean %s__%s?", envName(joinKey(parentPath(p), k)), strings.ToUpper(rest))
				return
			}
		}
	}
	near := suggest(key, known)
	switch {
	case near != "" && d.origin.of(p) != "":
		d.addf(p, "unknown key; did you mean %s?", envName(joinKey(parentPath(p), near)))
	case near != "":
		d.addf(p, "unknown key; did you mean %q?", near)
	default:
		d.addf(p, "unknown key; known keys here: %s", strings.Join(known, ", "))
	}
}

// decodeValue decodes v into the field rv according to the field's type.
func (d *decoder) decodeValue(p string, v any, rv reflect.Value) {
	switch dst := rv.Addr().Interface().(type) {
	case *string:
		d.decodeString(p, v, dst)
	case *bool:
		d.decodeBool(p, v, dst)
	case *int:
		var n int64
		if d.decodeInt(p, v, &n) {
			*dst = int(n)
		}
	case *float64:
		d.decodeFloat(p, v, dst)
	case *int64:
		d.decodeInt(p, v, dst)
	case *time.Duration:
		d.decodeDuration(p, v, dst)
	case *Size:
		d.decodeSize(p, v, dst)
	case **url.URL:
		d.decodeURL(p, v, dst)
	case *slog.Level:
		d.decodeLevel(p, v, dst)
	case *[]string:
		if list, ok := d.stringList(p, v, false); ok {
			*dst = list
		}
	case *Secret:
		d.decodeSecret(p, v, dst)
	case *[]Secret:
		if refs, ok := d.stringList(p, v, true); ok {
			*dst = d.resolveSecretList(p, refs)
		}
	case *[]Token:
		if refs, ok := d.stringList(p, v, true); ok {
			*dst = d.resolveTokens(p, refs)
		}
	case *Call:
		d.decodeCall(p, v, dst)
	case *Extract:
		d.decodeExtract(p, v, dst)
	case *UserRef:
		d.decodeUserRef(p, v, dst)
	case *map[string]any:
		d.decodeBody(p, v, dst)
	default:
		d.decodeComposite(p, v, rv)
	}
}

// decodeComposite handles tables (struct and pointer-to-struct fields) and
// arrays of tables (slices of structs).
func (d *decoder) decodeComposite(p string, v any, rv reflect.Value) {
	switch rv.Kind() {
	case reflect.Struct:
		if m, ok := d.table(p, v); ok {
			d.decodeStruct(p, m, rv)
		}
	case reflect.Pointer:
		m, ok := d.table(p, v)
		if !ok {
			return
		}
		if rv.IsNil() {
			rv.Set(newSection(rv.Type().Elem()))
		}
		d.decodeStruct(p, m, rv.Elem())
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			d.notTableList(p, v)
			return
		}
		out := reflect.MakeSlice(rv.Type(), 0, len(list))
		for i, e := range list {
			ep := joinIndex(p, i)
			elem := newSection(rv.Type().Elem()).Elem()
			if m, ok := d.table(ep, e); ok {
				d.decodeStruct(ep, m, elem)
			}
			out = reflect.Append(out, elem)
		}
		rv.Set(out)
	default:
		// Reaching here means a Config field has a type this decoder does
		// not know: a programming error caught by the tests.
		panic(fmt.Sprintf("config: no decoder for %s at %s", rv.Type(), p))
	}
}

// notTableList explains that p needs an array of tables.
func (d *decoder) notTableList(p string, v any) {
	if ev, ok := v.(envValue); ok {
		d.addf(p, "is a list of tables; the environment can set one key of an "+
			"entry the file defines, like %s (got %s)",
			envName(joinKey(joinIndex(p, 0), "key")), describe(ev))
		return
	}
	d.wrongType(p, fmt.Sprintf("an array of tables, written [[%s]]", p), v, false)
}

// newSection returns a pointer to the starting value of a table: the
// defaults of an array-of-tables entry or an optional section.
func newSection(t reflect.Type) reflect.Value {
	v := reflect.New(t)
	switch dst := v.Interface().(type) {
	case *Probe:
		*dst = defaultProbe()
	case *Meter:
		*dst = defaultMeter()
	}
	return v
}

// table returns v as a table, or records why it is not one.
func (d *decoder) table(p string, v any) (map[string]any, bool) {
	switch t := v.(type) {
	case map[string]any:
		return t, true
	case envValue:
		d.addf(p, "is a table: set its keys one by one, like %s (got %s)",
			envName(joinKey(p, "key")), describe(t))
	default:
		d.wrongType(p, "a table", v, false)
	}
	return nil, false
}

func (d *decoder) decodeString(p string, v any, dst *string) {
	switch t := v.(type) {
	case string:
		*dst = t
	case envValue:
		*dst = t.text
	default:
		d.wrongType(p, "a string", v, false)
	}
}

func (d *decoder) decodeBool(p string, v any, dst *bool) {
	switch t := v.(type) {
	case bool:
		*dst = t
	case envValue:
		b, err := strconv.ParseBool(t.text)
		if err != nil {
			d.addf(p, "must be true or false (got %s)", describe(t))
			return
		}
		*dst = b
	default:
		d.wrongType(p, "true or false", v, false)
	}
}

func (d *decoder) decodeInt(p string, v any, dst *int64) bool {
	switch t := v.(type) {
	case int64:
		*dst = t
	case envValue:
		n, err := strconv.ParseInt(strings.TrimSpace(t.text), 10, 64)
		if err != nil {
			d.addf(p, "must be a whole number (got %s)", describe(t))
			return false
		}
		*dst = n
	default:
		d.wrongType(p, "a whole number", v, false)
		return false
	}
	return true
}

// text returns the string form of v from the file or the environment.
func text(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case envValue:
		return t.text, true
	}
	return "", false
}

func (d *decoder) decodeDuration(p string, v any, dst *time.Duration) {
	s, ok := text(v)
	if !ok {
		d.wrongType(p, `a duration string like "10s" or "1m30s"`, v, false)
		return
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		d.addf(p, `must be a duration like "10s", "500ms" or "1m30s" (got %s)`, describe(v))
		return
	}
	*dst = dur
}

func (d *decoder) decodeSize(p string, v any, dst *Size) {
	if n, ok := v.(int64); ok {
		if n < 0 {
			d.addf(p, "must not be negative (got %d)", n)
			return
		}
		*dst = Size(n)
		return
	}
	s, ok := text(v)
	if !ok {
		d.wrongType(p, `a byte count or a size like "1MiB"`, v, false)
		return
	}
	size, err := ParseSize(s)
	if err != nil {
		d.addf(p, "%v (got %s)", err, describe(v))
		return
	}
	*dst = size
}

func (d *decoder) decodeURL(p string, v any, dst **url.URL) {
	s, ok := text(v)
	if !ok {
		d.wrongType(p, "a URL string", v, false)
		return
	}
	if strings.TrimSpace(s) == "" {
		*dst = nil // not set; a required URL's rule reports it
		return
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		// The parse error quotes the whole URL, which may hold a password:
		// report only its reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		d.addf(p, "is not a valid URL: %v", err)
		return
	}
	*dst = u
}

// levels are the accepted log levels by name.
var levels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo,
	"warn": slog.LevelWarn, "error": slog.LevelError,
}

func (d *decoder) decodeLevel(p string, v any, dst *slog.Level) {
	s, ok := text(v)
	if !ok {
		d.wrongType(p, `one of "debug", "info", "warn", "error"`, v, false)
		return
	}
	l, ok := levels[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		d.addf(p, `must be one of "debug", "info", "warn", "error" (got %s)`, describe(v))
		return
	}
	*dst = l
}

// stringList decodes an array of strings, or a comma-separated list from
// the environment. With secret set, no value is ever shown.
func (d *decoder) stringList(p string, v any, secret bool) ([]string, bool) {
	switch t := v.(type) {
	case envValue:
		out := []string{}
		for s := range strings.SplitSeq(t.text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, true
	case []any:
		out := make([]string, 0, len(t))
		ok := true
		for i, e := range t {
			s, isString := e.(string)
			if !isString {
				d.wrongType(joinIndex(p, i), "a string", e, secret)
				ok = false
				continue
			}
			out = append(out, s)
		}
		return out, ok
	default:
		d.wrongType(p, "an array of strings", v, secret)
		return nil, false
	}
}

func (d *decoder) decodeCall(p string, v any, dst *Call) {
	s, ok := text(v)
	if !ok {
		d.wrongType(p, `a string like "POST /path"`, v, false)
		return
	}
	c, err := ParseCall(s)
	if err != nil {
		d.addf(p, "%v", err)
		return
	}
	*dst = c
}

func (d *decoder) decodeUserRef(p string, v any, dst *UserRef) {
	s, ok := text(v)
	if !ok {
		d.wrongType(p, `a string like "header:X-User"`, v, false)
		return
	}
	u, err := ParseUserRef(s)
	if err != nil {
		d.addf(p, "%v", err)
		return
	}
	*dst = u
}

// decodeExtract accepts a dot path or a { from, map, default } table.
func (d *decoder) decodeExtract(p string, v any, dst *Extract) {
	if s, ok := text(v); ok {
		*dst = Extract{From: s}
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.wrongType(p, `a dot path like "summary.count" or a table { from, map, default }`,
			v, false)
		return
	}
	var e Extract
	for _, k := range sortedKeys(m) {
		kp := joinKey(p, k)
		switch k {
		case "from":
			d.decodeString(kp, m[k], &e.From)
		case "map":
			e.Map = d.stringMap(kp, m[k])
		case "default":
			e.Default = d.scalar(kp, m[k])
		default:
			d.unknownKey(kp, k, []string{"from", "map", "default"})
		}
	}
	*dst = e
}

// stringMap decodes a table whose values are all strings.
func (d *decoder) stringMap(p string, v any) map[string]string {
	m, ok := d.table(p, v)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		if s, ok := text(m[k]); ok {
			out[k] = s
			continue
		}
		d.wrongType(joinKey(p, k), "a string", m[k], false)
	}
	return out
}

// scalar accepts a string, number or boolean.
func (d *decoder) scalar(p string, v any) any {
	switch t := v.(type) {
	case string, int64, float64, bool:
		return t
	case envValue:
		return t.text
	}
	d.wrongType(p, "a string, number or boolean", v, false)
	return nil
}

// decodeBody accepts any table; values from the environment become
// strings.
func (d *decoder) decodeBody(p string, v any, dst *map[string]any) {
	m, ok := d.table(p, v)
	if !ok {
		return
	}
	*dst = plain(m).(map[string]any)
}

// plain copies a decoded value, turning envValues into strings.
func plain(v any) any {
	switch t := v.(type) {
	case envValue:
		return t.text
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = plain(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// kindOf names the TOML type of v without its value.
func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case envValue:
		return "text from the environment"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case map[string]any:
		return "a table"
	case []any:
		return "an array"
	default:
		return "a date or time"
	}
}

// describe names the TOML type of v and shows short scalar values.
func describe(v any) string {
	switch t := v.(type) {
	case string:
		return quoteShort(t)
	case envValue:
		return quoteShort(t.text)
	case bool:
		return "boolean " + strconv.FormatBool(t)
	case int64:
		return "integer " + strconv.FormatInt(t, 10)
	case float64:
		return "float " + strconv.FormatFloat(t, 'g', -1, 64)
	}
	return kindOf(v)
}

// quoteShort quotes s, cut to a readable length.
func quoteShort(s string) string {
	const limit = 60
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
