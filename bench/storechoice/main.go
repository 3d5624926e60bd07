// Command storechoice measures durable "debit N from account K if the
// balance allows" transactions on this machine with several embedded
// stores and commit styles, so the choice of the ledger's default store
// rests on numbers taken here (docs/store-choice.md).
//
// Every variant runs the same workload: -workers goroutines each debit a
// random 1..10 units from one of -accounts accounts, durably, for
// -duration; the variants are interleaved -reps times so that drift in
// the disk's speed spreads over all of them. After each run the store is
// checked: balances plus journal equal the starting total and no balance
// is negative.
//
// It is a separate module so that SQLite never enters the product's
// go.mod.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// debiter is one store under test.
type debiter interface {
	// Debit takes n from account acct if its balance allows, durably,
	// and reports whether it did.
	Debit(acct int, n int64) (bool, error)
	// Check verifies the store against the starting balances and the
	// number of accepted debits, then closes it.
	Check(accepted int64) error
}

// variant opens a fresh store in dir holding accounts accounts of
// balance each.
type variant struct {
	name string
	open func(dir string, accounts int, balance int64) (debiter, error)
}

var variants = []variant{
	{"raw 4 KiB write + fdatasync", openRaw},
	{"bbolt, one Update per debit", openBoltTx},
	{"bbolt, group commit (<=256 per Update)", openBoltGroup},
	{"zimmer ledger (metering/bolt, group commit)", openLedger},
	{"SQLite WAL FULL, one tx per debit", openSQLiteTx},
	{"SQLite WAL FULL, group commit (<=256 per tx)", openSQLiteGroup},
}

// config is the command line.
type config struct {
	dir      string
	workers  int
	accounts int
	duration time.Duration
	reps     int
	only     string
}

// result is one run of one variant.
type result struct {
	ops      int64
	accepted int64
	elapsed  time.Duration
	p50, p99 time.Duration
	checkErr error
}

func (r result) tps() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "storechoice:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("storechoice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.dir, "dir", os.TempDir(),
		"directory for the stores (on the disk to measure)")
	fs.IntVar(&cfg.workers, "workers", 64, "concurrent debiting goroutines")
	fs.IntVar(&cfg.accounts, "accounts", 1000, "accounts debited at random")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of one run")
	fs.IntVar(&cfg.reps, "reps", 3, "interleaved repetitions of every variant")
	fs.StringVar(&cfg.only, "only", "", "run only variants whose name contains this")
	if err := fs.Parse(args); err != nil {
		return err
	}

	results := map[string][]result{}
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, v := range variants {
			if !strings.Contains(v.name, cfg.only) {
				continue
			}
			r, err := runOnce(ctx, cfg, v)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			fmt.Fprintf(stderr, "rep %d  %-46s %9.0f tx/s  p50 %7s  p99 %7s  check %v\n",
				rep, v.name, r.tps(), r.p50.Round(time.Microsecond),
				r.p99.Round(time.Microsecond), errText(r.checkErr))
			results[v.name] = append(results[v.name], r)
		}
	}
	printTable(stdout, results)
	return nil
}

// runOnce opens a fresh store, runs the workload and checks the store.
func runOnce(ctx context.Context, cfg config, v variant) (result, error) {
	const balance = 1_000_000_000
	dir, err := os.MkdirTemp(cfg.dir, "storechoice-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	d, err := v.open(dir, cfg.accounts, balance)
	if err != nil {
		return result{}, fmt.Errorf("open: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var ops, accepted atomic.Int64
	lat := make([][]time.Duration, cfg.workers)
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for ctx.Err() == nil {
				t0 := time.Now()
				ok, err := d.Debit(rng.IntN(cfg.accounts), 1+rng.Int64N(10))
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				ops.Add(1)
				if ok {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}

	all := slices.Concat(lat...)
	slices.Sort(all)
	return result{
		ops:      ops.Load(),
		accepted: accepted.Load(),
		elapsed:  elapsed,
		p50:      percentile(all, 0.50),
		p99:      percentile(all, 0.99),
		checkErr: d.Check(accepted.Load()),
	}, nil
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// printTable writes one Markdown row per variant: the median run by
// throughput, with the range over runs.
func printTable(w io.Writer, results map[string][]result) {
	fmt.Fprintln(w, "| store and commit style | tx/s (median) | tx/s (min-max) |"+
		" p50 | p99 | consistent |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	for _, v := range variants {
		rs := results[v.name]
		if len(rs) == 0 {
			continue
		}
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.tps(), b.tps()) })
		med := rs[len(rs)/2]
		var errs []error
		for _, r := range rs {
			errs = append(errs, r.checkErr)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f-%.0f | %s | %s | %s |\n",
			v.name, med.tps(), rs[0].tps(), rs[len(rs)-1].tps(),
			fmtDur(med.p50), fmtDur(med.p99), errText(errors.Join(errs...)))
	}
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// errNoCheck is the Check answer of a store that holds no balances.
var errNoCheck = errors.New("nothing to check")

func errText(err error) string {
	if err == nil {
		return "yes"
	}
	if errors.Is(err, errNoCheck) {
		return "-"
	}
	return "NO: " + err.Error()
}
