package metrics

import (
	"testing"
	"time"
)

// The numbers compare the cost of a disabled recorder (Nop) with the
// Prometheus one on the request path; nothing here asserts a speed.

func BenchmarkNopRequest(b *testing.B) {
	var r Recorder = Nop{}
	b.ReportAllocs()
	for b.Loop() {
		r.Request("provision", 200, time.Millisecond)
	}
}

func BenchmarkPrometheusRequest(b *testing.B) {
	var r Recorder = New(Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Request("provision", 200, time.Millisecond)
		}
	})
}

func BenchmarkPrometheusAuth(b *testing.B) {
	var r Recorder = New(Options{})
	b.ReportAllocs()
	for b.Loop() {
		r.Auth(AuthOK)
	}
}

func BenchmarkPrometheusLedgerOp(b *testing.B) {
	var r Recorder = New(Options{})
	b.ReportAllocs()
	for b.Loop() {
		r.LedgerOp(OpConsume, OutcomeOK, time.Millisecond)
	}
}

func BenchmarkGather(b *testing.B) {
	p := New(Options{
		Probes: func() []Probe { return []Probe{{Name: "app", State: "up"}} },
		Health: func() string { return "ok" },
	})
	for _, ep := range []string{"health", "provision", "consume", "proxy"} {
		p.Request(ep, 200, time.Millisecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Registry().Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
