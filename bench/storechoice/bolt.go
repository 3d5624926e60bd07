package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"
)

var (
	bucketAccounts = []byte("accounts") // 8-byte id -> 8-byte balance
	bucketJournal  = []byte("journal")  // 8-byte seq -> 8-byte id, 8-byte amount
)

// boltStore holds the accounts and journal in one bbolt file, opened with
// the options the ledger uses.
type boltStore struct {
	db    *bbolt.DB
	total int64
	group *grouper // nil: one Update per debit
}

func openBolt(dir string, accounts int, balance int64) (*boltStore, error) {
	db, err := bbolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bbolt.Options{
		Timeout:      time.Second,
		FreelistType: bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		acc, err := tx.CreateBucket(bucketAccounts)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketJournal); err != nil {
			return err
		}
		for id := range accounts {
			if err := acc.Put(u64(uint64(id)), u64(uint64(balance))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &boltStore{db: db, total: int64(accounts) * balance}, nil
}

func openBoltTx(dir string, accounts int, balance int64) (debiter, error) {
	return openBolt(dir, accounts, balance)
}

func openBoltGroup(dir string, accounts int, balance int64) (debiter, error) {
	s, err := openBolt(dir, accounts, balance)
	if err != nil {
		return nil, err
	}
	s.group = newGrouper(func(batch []*groupReq) error {
		return s.db.Update(func(tx *bbolt.Tx) error {
			for _, r := range batch {
				ok, err := debitTx(tx, r.acct, r.n)
				if err != nil {
					return err
				}
				r.ok = ok
			}
			return nil
		})
	})
	return s, nil
}

func (s *boltStore) Debit(acct int, n int64) (bool, error) {
	if s.group != nil {
		return s.group.Debit(acct, n)
	}
	var ok bool
	err := s.db.Update(func(tx *bbolt.Tx) error {
		var err error
		ok, err = debitTx(tx, acct, n)
		return err
	})
	return ok && err == nil, err
}

// debitTx takes n from acct if the balance allows and journals it.
func debitTx(tx *bbolt.Tx, acct int, n int64) (bool, error) {
	acc := tx.Bucket(bucketAccounts)
	key := u64(uint64(acct))
	bal := int64(binary.BigEndian.Uint64(acc.Get(key)))
	if bal < n {
		return false, nil
	}
	if err := acc.Put(key, u64(uint64(bal-n))); err != nil {
		return false, err
	}
	j := tx.Bucket(bucketJournal)
	j.FillPercent = 1
	seq, err := j.NextSequence()
	if err != nil {
		return false, err
	}
	entry := binary.BigEndian.AppendUint64(u64(uint64(acct)), uint64(n))
	return true, j.Put(u64(seq), entry)
}

func (s *boltStore) Check(accepted int64) error {
	if s.group != nil {
		s.group.stop()
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		var sum, journaled, rows int64
		err := tx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
			bal := int64(binary.BigEndian.Uint64(v))
			if bal < 0 {
				return errors.New("negative balance")
			}
			sum += bal
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketJournal).ForEach(func(_, v []byte) error {
			journaled += int64(binary.BigEndian.Uint64(v[8:]))
			rows++
			return nil
		})
		if err != nil {
			return err
		}
		return balanceCheck(s.total, sum, journaled, rows, accepted)
	})
	return errors.Join(err, s.db.Close())
}

// balanceCheck compares a store's sums with the workload's counts.
func balanceCheck(total, balances, journaled, rows, accepted int64) error {
	if balances+journaled != total {
		return fmt.Errorf("balances %d + journal %d != %d", balances, journaled, total)
	}
	if rows != accepted {
		return fmt.Errorf("journal rows %d, accepted debits %d", rows, accepted)
	}
	return nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
