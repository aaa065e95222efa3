-- Retention (ioc_shared.platform.retention) deletes processed_events rows by age. They are
-- written in insertion order of processed_at on the hot path of every consumer: a BRIN
-- index finds the old ones at almost no cost per insert (a btree would add an index entry,
-- its WAL and page splits to every claim).
CREATE INDEX processed_events_processed_at ON processed_events USING brin (processed_at);

-- Parked outbox messages are re-published (`parked outbox replay`) or dropped with a
-- reason (`parked outbox drop`) by an operator; the row stays as the record of it until
-- retention deletes it.
ALTER TABLE outbox_parked
    ADD COLUMN republished_at timestamptz,
    ADD COLUMN dropped_at     timestamptz,
    ADD COLUMN drop_reason    text;
