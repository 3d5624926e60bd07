package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	gotoml "github.com/pelletier/go-toml/v2"
)

// Options adjust how a configuration is read. The zero value reads files
// from the local file system.
type Options struct {
	// ReadFile reads the configuration file (Load) and the files named by
	// "file:" secret references. Nil means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// FileName names the configuration in problems. Load sets it to the
	// path when empty.
	FileName string
}

// Load reads the file at path and parses it with [Parse].
func Load(path string, environ []string) (*Config, error) {
	return Options{}.Load(path, environ)
}

// Parse parses a TOML document, applies the overrides found in environ
// (in os.Environ's "NAME=value" form) and validates the result. On any
// problem it returns a *ValidationError listing all of them; a TOML syntax
// error is one problem with an empty Path.
func Parse(data []byte, environ []string) (*Config, error) {
	return Options{}.Parse(data, environ)
}

// Load reads the file at path and parses it with [Options.Parse]. A file
// that cannot be read is a plain error, not a *ValidationError.
func (o Options) Load(path string, environ []string) (*Config, error) {
	data, err := o.readFile()(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if o.FileName == "" {
		o.FileName = path
	}
	return o.Parse(data, environ)
}

func (o Options) readFile() func(string) ([]byte, error) {
	if o.ReadFile != nil {
		return o.ReadFile
	}
	return os.ReadFile
}

// Parse is [Parse] with these options.
func (o Options) Parse(data []byte, environ []string) (*Config, error) {
	// 1. Parse the TOML document into maps.
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), toml.Parser()); err != nil {
		return nil, &ValidationError{File: o.FileName, Problems: []Problem{syntaxProblem(err)}}
	}
	raw := k.Raw()

	// 2. Apply the environment's overrides.
	origin, problems := applyEnv(raw, environ)

	// 3. Decode into the defaults.
	cfg := Default()
	d := &decoder{
		origin:  origin,
		secrets: newSecretSource(environ, o.readFile()),
	}
	d.decodeStruct("", raw, reflect.ValueOf(cfg).Elem())
	problems = append(problems, d.problems...)

	// 4. Validate, skipping keys whose value could not be decoded: the
	// default left in their place says nothing about the file.
	v := &validator{readFile: o.readFile()}
	v.validate(cfg)
	for _, p := range v.problems {
		if !failedAt(d.problems, p.Path) {
			problems = append(problems, p)
		}
	}

	// 5. Locate every problem in the file or the environment.
	lines := indexLines(data)
	locate := func(ps []Problem) []Problem {
		for i := range ps {
			p := &ps[i]
			if p.Env == "" {
				p.Env = origin.of(p.Path)
			}
			if p.Env == "" && p.Path != "" {
				p.Line = lines.lineOf(p.Path)
			}
		}
		return sortProblems(ps)
	}
	cfg.warnings = locate(v.warnings)
	if len(problems) > 0 {
		return nil, &ValidationError{File: o.FileName, Problems: locate(problems)}
	}
	return cfg, nil
}

// failedAt reports whether decoding already reported path p or one of its
// ancestors.
func failedAt(decoded []Problem, p string) bool {
	for _, dp := range decoded {
		if dp.Path == "" {
			continue
		}
		if p == dp.Path || strings.HasPrefix(p, dp.Path+".") ||
			strings.HasPrefix(p, dp.Path+"[") {
			return true
		}
	}
	return false
}

// syntaxProblem turns a TOML parse error into a problem with its line.
func syntaxProblem(err error) Problem {
	var de *gotoml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		return Problem{Line: line, Message: fmt.Sprintf("TOML syntax error at column %d: %s",
			col, msg)}
	}
	return Problem{Message: "TOML syntax error: " + strings.TrimPrefix(err.Error(), "toml: ")}
}
