package config

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

// base is a minimal valid document; case documents appended to it start
// at line 3.
const base = "[automation]\nversion = \"1.0.0\"\n"

// fakeFiles is a ReadFile over an in-memory file set.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		s, ok := files[name]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return []byte(s), nil
	}
}

// parse parses doc hermetically: files come from files, never the disk.
func parse(t *testing.T, doc string, env []string, files map[string]string) (*Config, error) {
	t.Helper()
	o := Options{ReadFile: fakeFiles(files), FileName: "config.toml"}
	return o.Parse([]byte(doc), env)
}

// mustParse fails the test unless doc is valid.
func mustParse(t *testing.T, doc string, env ...string) *Config {
	t.Helper()
	c, err := parse(t, doc, env, nil)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return c
}

// problemsOf returns the problems of a *ValidationError.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got error %v (%T), want *ValidationError", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("got a ValidationError without problems")
	}
	return ve.Problems
}

// onlyProblem parses doc and returns its single problem.
func onlyProblem(t *testing.T, doc string, env ...string) Problem {
	t.Helper()
	_, err := parse(t, doc, env, nil)
	if err == nil {
		t.Fatalf("Parse succeeded, want one problem")
	}
	ps := problemsOf(t, err)
	if len(ps) != 1 {
		t.Fatalf("got %d problems, want 1:\n%v", len(ps), err)
	}
	return ps[0]
}

// checkProblem compares a problem's path and line and looks for want in
// its message.
func checkProblem(t *testing.T, got Problem, path string, line int, want string) {
	t.Helper()
	if got.Path != path || got.Line != line {
		t.Errorf("got problem at %s line %d, want %s line %d (%s)",
			got.Path, got.Line, path, line, got.Message)
	}
	if !strings.Contains(got.Message, want) {
		t.Errorf("got message %q, want it to contain %q", got.Message, want)
	}
}
