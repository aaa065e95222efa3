-- accepted_at grows with insertion order: a BRIN index serves range scans by age (a
-- retention job) at almost no cost per insert, where the btree cost an index entry, its
-- WAL and its page splits for every accepted record on the hot path.
DROP INDEX IF EXISTS accepted_records_accepted_at;
CREATE INDEX accepted_records_accepted_at ON accepted_records USING brin (accepted_at);
