package validate

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
)

// Release names the release the chart is rendered as.
var Release = common.ReleaseOptions{
	Name:      "notes-assistant",
	Namespace: "default",
	Revision:  1,
	IsInstall: true,
}

// RenderChart renders the chart in dir with values merged over its
// values.yaml, as "helm template" would: values are checked against the
// chart's schema, and a template that names a value that does not exist
// fails. The rendered objects are decoded strictly into a Bundle.
func RenderChart(dir string, values map[string]any) (*Bundle, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values, Release,
		common.DefaultCapabilities, false)
	if err != nil {
		return nil, fmt.Errorf("chart values: %w", err)
	}
	out, err := engine.Engine{Strict: true}.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart: %w", err)
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	b := &Bundle{}
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" {
			continue
		}
		if err := b.AddYAML(name, []byte(out[name])); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// LintChart runs Helm's linter on the chart in dir with values merged over
// its values.yaml and returns its messages of severity warning or worse,
// as "helm lint --strict" fails on them.
func LintChart(dir string, values map[string]any) []support.Message {
	res := lint.RunAll(dir, values, Release.Namespace)
	var bad []support.Message
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			bad = append(bad, m)
		}
	}
	return bad
}
