-- Audit rows are written once, in the transaction that creates or changes their
-- incident: their event ids derive from the input event that transaction claims in
-- processed_events. The unique index on a random uuid (an insert into a random page)
-- and the foreign-key check (a lookup and a lock of the incident row) made each audit
-- row cost more than the incident itself; lookups go by incident, not by event id.
ALTER TABLE transitions DROP CONSTRAINT IF EXISTS transitions_event_id_key;
ALTER TABLE transitions DROP CONSTRAINT IF EXISTS transitions_incident_id_fkey;
