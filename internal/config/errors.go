package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Problem is one mistake (or, from Warnings, one risk) in the configuration.
// Messages never contain a secret.
type Problem struct {
	// Path is the key path, e.g. "route[2].meter.user"; empty for a TOML
	// syntax error.
	Path string
	// Line is the 1-based line in the file, or 0 when unknown (a missing
	// section, or a value from the environment).
	Line int
	// Env names the environment variable that set the value, if one did.
	Env string
	// Message says what is wrong in plain words.
	Message string
}

// Format renders the problem as one line, prefixed with file (if not
// empty) and the line: `config.toml:12: route[0].path: must start with "/"`.
// A value from the environment is prefixed with the variable's name instead.
func (p Problem) Format(file string) string {
	var b strings.Builder
	switch {
	case p.Env != "":
		b.WriteString(p.Env)
	case file != "" && p.Line > 0:
		b.WriteString(file + ":" + strconv.Itoa(p.Line))
	case file != "":
		b.WriteString(file)
	case p.Line > 0:
		b.WriteString("line " + strconv.Itoa(p.Line))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// String is Format without a file name.
func (p Problem) String() string { return p.Format("") }

// ValidationError holds every problem found in one load, in file order
// (problems without a line last).
type ValidationError struct {
	// File is the configuration's path as given to Load; empty for Parse.
	File     string
	Problems []Problem
}

// Error prints one problem per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Format(e.File)
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by line (unknown lines last), then path,
// and drops exact duplicates.
func sortProblems(ps []Problem) []Problem {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Path, b.Path))
	})
	return slices.Compact(ps)
}

// suggest returns the candidate closest to word, or "" when none is close
// enough to be a likely typo.
func suggest(word string, candidates []string) string {
	best, bestDist := "", len(word)/3+2
	for _, c := range candidates {
		d := editDistance(strings.ToLower(word), c)
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
