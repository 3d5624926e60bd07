-- Keys held by calls in flight, shared by every replica (Store.HoldKey),
-- and an index that lets callers' idempotency records be pruned by age
-- (Store.PruneIdempotency). Internal call records have theirs (0001).

CREATE TABLE key_holds (
	key        text        PRIMARY KEY,
	-- names one hold, so a release or a retried hold acts on its own only
	token      text        NOT NULL,
	-- on the database's clock, so replicas' clocks never disagree on it
	expires_at timestamptz NOT NULL
);

CREATE INDEX key_holds_expires ON key_holds (expires_at);

-- Building it blocks writes to idempotency for as long as it takes; on a
-- large table an operator may build it beforehand, without blocking, with
-- CREATE INDEX CONCURRENTLY and this exact name and definition.
CREATE INDEX IF NOT EXISTS idempotency_caller_created
	ON idempotency (created_at) WHERE NOT internal;
