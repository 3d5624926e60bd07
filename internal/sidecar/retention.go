package sidecar

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Retention: while the sidecar serves, one goroutine prunes the ledger's
// records that only grow: callers' idempotency records older than
// ledger.idempotency_retention, in both backends, and on PostgreSQL the
// internal call records and lapsed key holds (pruneJobs in build.go says
// which). Each backend deletes in bounded batches, so pruning never holds
// up a consume for long. The journal and the balances are never pruned:
// the journal is the audit trail, archived with `ledger export`.
//
// Every replica of a shared ledger prunes; the PostgreSQL backend skips
// rows another pruner holds, so they share the work.

const (
	// pruneFirst is the wait before the first round, so that start-up
	// and the first requests do not meet it.
	pruneFirst = time.Minute
	// pruneEvery is the wait between rounds. An hour keeps each round
	// small (an hour's worth of records) and the retention exact enough.
	pruneEvery = time.Hour
	// callRecordAge is the age past which PostgreSQL's internal call
	// records go: they matter only while their call is retried.
	callRecordAge = time.Hour
)

// pruneJob deletes one kind of record older than what now implies, and
// returns how many it deleted.
type pruneJob struct {
	name string // what it deletes, for the log
	run  func(ctx context.Context, now time.Time) (int64, error)
}

// retention runs its jobs after first and then every every (each wait
// jittered by a tenth, so replicas started together drift apart), until
// its context ends.
type retention struct {
	jobs         []pruneJob
	first, every time.Duration
	now          func() time.Time
	log          *slog.Logger
}

// startRetention starts pruning the ledger until ctx ends, and returns a
// function that stops it and waits for it to return. With nothing to
// prune it starts no goroutine.
func (s *Sidecar) startRetention(ctx context.Context) (stop func()) {
	r := &retention{
		jobs:  pruneJobs(s.ledger, s.cfg.Ledger),
		first: pruneFirst,
		every: pruneEvery,
		now:   time.Now,
		log:   s.log,
	}
	return r.start(ctx)
}

// start runs r in a goroutine until ctx ends or stop is called; stop
// waits for the goroutine. A round in progress ends at its next batch.
func (r *retention) start(ctx context.Context) (stop func()) {
	if len(r.jobs) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// run waits and prunes, round after round, until ctx ends.
func (r *retention) run(ctx context.Context) {
	t := time.NewTimer(jitter(r.first))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.round(ctx)
		t.Reset(jitter(r.every))
	}
}

// round runs every job once and logs what each deleted or why it
// failed; a failed job is tried again next round.
func (r *retention) round(ctx context.Context) {
	now := r.now()
	for _, j := range r.jobs {
		n, err := j.run(ctx, now)
		switch {
		case ctx.Err() != nil:
			return // stopping: the next start prunes the rest
		case err != nil:
			r.log.Warn("ledger pruning failed", slog.String("records", j.name),
				slog.Int64("deleted", n), slog.Any("err", err))
		case n > 0:
			r.log.Info("ledger pruned", slog.String("records", j.name),
				slog.Int64("deleted", n))
		}
	}
}

// jitter returns d give or take a tenth, at random.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/10 + rand.N(d/5+1)
}
