-- Settles and reconciles (metering.Ledger.Settle and Reconcile): their
-- journal kinds, and how a debit was settled, kept with its record.

ALTER TABLE journal DROP CONSTRAINT journal_kind_check;
ALTER TABLE journal ADD CONSTRAINT journal_kind_check
	CHECK (kind IN ('provision', 'debit', 'credit', 'refund', 'settle', 'reconcile'));

ALTER TABLE idempotency
	-- the journal entry of the debit's settle, once made
	ADD COLUMN settle_seq bigint,
	-- the settle as JSON: the units asked for, the debit's split after
	-- it, the first answer's account and the call that made it
	ADD COLUMN settle     jsonb;
