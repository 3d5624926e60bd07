package main

import "sync"

// maxGroup bounds how many debits share one transaction.
const maxGroup = 256

// groupReq is one debit waiting for its group's commit.
type groupReq struct {
	acct int
	n    int64
	ok   bool
	err  error
	done chan struct{}
}

// grouper funnels debits to one goroutine that commits them in groups:
// it takes what is queued, up to maxGroup, applies it in one transaction
// and answers each caller after the commit, as the ledger's store does.
type grouper struct {
	reqs  chan *groupReq
	apply func(batch []*groupReq) error // sets ok per request; commits
	wg    sync.WaitGroup
}

func newGrouper(apply func(batch []*groupReq) error) *grouper {
	g := &grouper{reqs: make(chan *groupReq, maxGroup), apply: apply}
	g.wg.Go(g.run)
	return g
}

// Debit queues one debit and waits for its commit.
func (g *grouper) Debit(acct int, n int64) (bool, error) {
	r := &groupReq{acct: acct, n: n, done: make(chan struct{})}
	g.reqs <- r
	<-r.done
	return r.ok, r.err
}

// stop ends the writer once every queued debit is answered. No Debit may
// run concurrently with or after it.
func (g *grouper) stop() {
	close(g.reqs)
	g.wg.Wait()
}

func (g *grouper) run() {
	batch := make([]*groupReq, 0, maxGroup)
	for first := range g.reqs {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxGroup {
			select {
			case r, ok := <-g.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		err := g.apply(batch)
		for _, r := range batch {
			if err != nil {
				r.ok, r.err = false, err
			}
			close(r.done)
		}
	}
}
