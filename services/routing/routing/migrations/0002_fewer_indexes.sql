-- Audit rows are written once, in the transaction that creates or changes their
-- incident: their event ids derive from the input event that transaction claims in
-- processed_events. The unique index on a random uuid (an insert into a random page)
-- and the foreign-key check (a lookup and a lock of the incident row) made each audit
-- row cost more than the incident itself; lookups go by incident, not by event id.
ALTER TABLE transitions DROP CONSTRAINT IF EXISTS transitions_event_id_key;
ALTER TABLE transitions DROP CONSTRAINT IF EXISTS transitions_incident_id_fkey;

-- An incident's id is derived from (dataset, record id) (routing.domain.model.incident_id_for):
-- the primary key already makes the pair unique; a second unique index only cost writes.
ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_dataset_record_id_key;
