package main

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// ledgerStore is the product's own ledger, metering/bolt, with its JSON
// records, journal entries and group commit; accounts hold demo tokens
// only, so every debit is the demo rule's simple case.
type ledgerStore struct {
	s       *bolt.Store
	total   int64
	ids     int
	balance int64
}

func openLedger(dir string, accounts int, balance int64) (debiter, error) {
	s, err := bolt.Open(filepath.Join(dir, "ledger.db"), metering.Options{MaxUnits: 10})
	if err != nil {
		return nil, err
	}
	l := &ledgerStore{s: s, total: int64(accounts) * balance, ids: accounts, balance: balance}

	// Provision in parallel, so the setup itself is group-committed.
	var wg sync.WaitGroup
	errs := make([]error, accounts)
	for id := range accounts {
		wg.Go(func() {
			_, errs[id] = s.Provision(context.Background(), metering.ProvisionRequest{
				UserAutomationID: int64(id), DemoTokens: &balance,
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return l, nil
}

func (l *ledgerStore) Debit(acct int, n int64) (bool, error) {
	res, err := l.s.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: int64(acct), Units: n, UsageType: "bench",
	})
	return res.Accepted, err
}

func (l *ledgerStore) Check(accepted int64) error {
	ctx := context.Background()
	var sum, journaled, rows int64
	for id := range l.ids {
		a, err := l.s.Account(ctx, int64(id))
		if err != nil {
			return errors.Join(err, l.s.Close())
		}
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			return errors.Join(errors.New("negative balance"), l.s.Close())
		}
		sum += a.DemoTokens + a.PaidTokens
	}
	err := l.s.Journal(ctx, 0, 0, func(e metering.Entry) error {
		if e.Kind == metering.EntryDebit {
			journaled -= e.DemoDelta + e.PaidDelta
			rows++
		}
		return nil
	})
	if err == nil {
		err = balanceCheck(l.total, sum, journaled, rows, accepted)
	}
	return errors.Join(err, l.s.Close())
}
