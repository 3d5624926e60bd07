package config

import (
	"strconv"
	"strings"
)

// Key paths name a value the way a user reads the file: keys joined by
// ".", array entries as "[i]" (route[2].meter.user). A key that is not a
// bare TOML key is quoted (body."x.y").

// joinKey appends key to the path p.
func joinKey(p, key string) string {
	k := key
	if !isBareKey(key) {
		k = strconv.Quote(key)
	}
	if p == "" {
		return k
	}
	return p + "." + k
}

// joinIndex appends an array index to the path p.
func joinIndex(p string, i int) string {
	return p + "[" + strconv.Itoa(i) + "]"
}

// isBareKey reports whether key can be written unquoted in TOML.
func isBareKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// parentPath removes the last key or index from p; "" has no parent.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
		return ""
	}
	if strings.HasSuffix(p, `"`) {
		// Find the opening quote: the last unescaped '"' before the end.
		for i := len(p) - 2; i >= 0; i-- {
			if p[i] != '"' || escaped(p, i) {
				continue
			}
			return strings.TrimSuffix(p[:i], ".")
		}
		return ""
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// escaped reports whether p[i] is preceded by an odd number of backslashes.
func escaped(p string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && p[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// envName is the environment variable that overrides the key path p, for
// paths made only of bare keys and indexes.
func envName(p string) string {
	r := strings.NewReplacer(".", "__", "[", "__", "]", "")
	return envPrefix + strings.ToUpper(r.Replace(p))
}
