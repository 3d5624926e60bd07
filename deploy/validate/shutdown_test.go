package validate

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestShutdownBoundsMatchSource reads the named timeouts of the sidecar's
// shutdown from the main module's source, so the sums the checks encode
// (egressStop) fail here when one of them changes there.
func TestShutdownBoundsMatchSource(t *testing.T) {
	tests := []struct {
		file, name string
		want       time.Duration
	}{
		{"internal/egress/options.go", "DefaultFinalizeTimeout", egressFinalize},
		{"internal/sidecar/egress.go", "deliverFlushTimeout", outboxFlush},
		{"internal/egress/outbox/deliver.go", "DefaultCallTimeout", outboxConsume},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sourceDuration(filepath.Join(repoRoot, tt.file), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("%s in %s is %s, the checks assume %s: update the "+
					"bounds in checks.go and the deploy files' timelines", tt.name,
					tt.file, got, tt.want)
			}
		})
	}
}

// sourceDuration returns the value of the top-level constant name in the
// Go file path, a product of integer literals and time units.
func sourceDuration(path, name string) (time.Duration, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs, ok := s.(*ast.ValueSpec)
			if !ok {
				continue
			}
			for i, id := range vs.Names {
				if id.Name == name && i < len(vs.Values) {
					return evalDuration(vs.Values[i])
				}
			}
		}
	}
	return 0, fmt.Errorf("%s: no constant %s", path, name)
}

// evalDuration evaluates e when it is built of integer literals, time's
// units and "*".
func evalDuration(e ast.Expr) (time.Duration, error) {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return evalDuration(e.X)
	case *ast.BasicLit:
		if e.Kind != token.INT {
			return 0, fmt.Errorf("literal %s is not an integer", e.Value)
		}
		n, err := strconv.ParseInt(e.Value, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("literal %s: %w", e.Value, err)
		}
		return time.Duration(n), nil
	case *ast.SelectorExpr:
		units := map[string]time.Duration{"Millisecond": time.Millisecond,
			"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour}
		if x, ok := e.X.(*ast.Ident); ok && x.Name == "time" {
			if u, ok := units[e.Sel.Name]; ok {
				return u, nil
			}
		}
	case *ast.BinaryExpr:
		if e.Op != token.MUL {
			break
		}
		a, err := evalDuration(e.X)
		if err != nil {
			return 0, err
		}
		b, err := evalDuration(e.Y)
		if err != nil {
			return 0, err
		}
		return a * b, nil
	}
	return 0, fmt.Errorf("cannot evaluate %T", e)
}
