package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// envPrefix starts every environment variable that overrides a key.
const envPrefix = "ZIMMER_SIDECAR_"

// EnvConfigPath is reserved for the command line to name the configuration
// file; the loader does not treat it as a key override.
const EnvConfigPath = envPrefix + "CONFIG"

// envValue is a value taken from the environment. It is always text and is
// converted to the key's type when decoded (a list is comma-separated).
type envValue struct {
	name string // the variable's name
	text string
}

// envOrigin maps the key paths the environment set (and the tables it had
// to create) to the variable's name.
type envOrigin map[string]string

// of returns the variable that set p or one of its ancestors, or "".
func (o envOrigin) of(p string) string {
	for ; p != ""; p = parentPath(p) {
		if name, ok := o[p]; ok {
			return name
		}
	}
	return ""
}

// envOverrides returns the overriding variables in environ, sorted by name.
// The first occurrence of a name wins, as with os.Getenv.
func envOverrides(environ []string) []envValue {
	seen := map[string]bool{}
	var out []envValue
	for _, kv := range environ {
		name, text, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) || name == EnvConfigPath || seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, envValue{name: name, text: text})
	}
	slices.SortFunc(out, func(a, b envValue) int { return strings.Compare(a.name, b.name) })
	return out
}

// applyEnv writes the overrides found in environ into the decoded document
// raw. Entries of arrays of tables are addressed by index and must exist in
// the file; missing tables are created.
func applyEnv(raw map[string]any, environ []string) (envOrigin, []Problem) {
	origin := envOrigin{}
	var problems []Problem
	for _, ev := range envOverrides(environ) {
		if p := applyOne(raw, ev, origin); p != nil {
			problems = append(problems, *p)
		}
	}
	return origin, problems
}

// applyOne sets one variable's value, or explains why it cannot.
func applyOne(raw map[string]any, ev envValue, origin envOrigin) *Problem {
	segs := strings.Split(strings.ToLower(strings.TrimPrefix(ev.name, envPrefix)), "__")
	if slices.Contains(segs, "") {
		return &Problem{Env: ev.name, Message: `is not a key path: levels are joined ` +
			`by exactly two underscores, like ZIMMER_SIDECAR_LISTEN__PUBLIC`}
	}
	fail := func(p, format string, args ...any) *Problem {
		return &Problem{Path: p, Env: ev.name, Message: fmt.Sprintf(format, args...)}
	}

	// Walk to the table that holds the last key.
	var cur any = raw
	p := ""
	for i, seg := range segs[:len(segs)-1] {
		switch c := cur.(type) {
		case map[string]any:
			p = joinKey(p, seg)
			next, ok := c[seg]
			if !ok {
				if _, err := strconv.Atoi(segs[i+1]); err == nil {
					return missingEntries(p, segs[:i+1], ev.name)
				}
				next = map[string]any{}
				c[seg] = next
				origin[p] = ev.name
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 {
				return fail(p, "is a list of tables: name an entry by its index, like %s",
					envName(joinKey(joinIndex(p, 0), segs[i+1])))
			}
			if n >= len(c) {
				return fail(p, "has %d entries in the file; the environment can only "+
					"override entries the file defines", len(c))
			}
			p = joinIndex(p, n)
			cur = c[n]
		default:
			return fail(p, "is not a table, so %s cannot set a key inside it", ev.name)
		}
	}

	// Set the last key.
	last := segs[len(segs)-1]
	c, ok := cur.(map[string]any)
	if list, isList := cur.([]any); isList {
		if len(list) > 0 {
			if _, tables := list[0].(map[string]any); tables {
				return fail(p, "is a list of tables: set one key of an entry, like %s",
					envName(joinKey(joinIndex(p, 0), last)))
			}
		}
		return fail(p, "is a list: set all of it, comma-separated, with %s", envName(p))
	}
	if !ok {
		return fail(p, "is not a table, so %s cannot set a key inside it", ev.name)
	}
	p = joinKey(p, last)
	c[last] = ev
	origin[p] = ev.name
	return nil
}

// missingEntries explains an index into a list the file does not have.
func missingEntries(p string, segs []string, name string) *Problem {
	msg := "the file has no entries here; the environment can only override " +
		"entries the file defines"
	t := schemaType(segs)
	if t != nil && t.Kind() == reflect.Slice &&
		(t.Elem().Kind() != reflect.Struct || t.Elem() == reflect.TypeFor[Token]()) {
		msg = "is a list: set all of it, comma-separated, with " + envName(p)
	}
	return &Problem{Path: p, Env: name, Message: msg}
}

// schemaType returns the Go type of the Config field at the key path segs
// (indexes step into slices), or nil when there is none.
func schemaType(segs []string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for _, seg := range segs {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if _, err := strconv.Atoi(seg); err == nil && t.Kind() == reflect.Slice {
			t = t.Elem()
			continue
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for i := range t.NumField() {
			if tomlKey(t.Field(i)) == seg {
				next = t.Field(i).Type
			}
		}
		if next == nil {
			return nil
		}
		t = next
	}
	return t
}
