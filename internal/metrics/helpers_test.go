package metrics

import (
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather returns the registry's families by name, failing t on error.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// labelsOf renders a series' labels as "k=v,k=v" in name order.
func labelsOf(m *dto.Metric) string {
	parts := make([]string, 0, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// value returns the value of the series of family fam whose labels render
// as labels, and whether it exists. Histograms give their sample count.
func value(fams map[string]*dto.MetricFamily, fam, labels string) (float64, bool) {
	mf, ok := fams[fam]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if labelsOf(m) != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// wantValue fails t unless the series exists with value want.
func wantValue(t *testing.T, fams map[string]*dto.MetricFamily, fam, labels string,
	want float64) {
	t.Helper()
	got, ok := value(fams, fam, labels)
	if !ok {
		t.Errorf("%s{%s}: no such series; have %v", fam, labels, seriesOf(fams, fam))
		return
	}
	if got != want {
		t.Errorf("%s{%s} = %v, want %v", fam, labels, got, want)
	}
}

// seriesOf lists a family's label sets, for failure messages.
func seriesOf(fams map[string]*dto.MetricFamily, fam string) []string {
	var out []string
	for _, m := range fams[fam].GetMetric() {
		out = append(out, labelsOf(m))
	}
	return out
}
