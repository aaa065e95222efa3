-- Data disputes (Đ4.5): an incident opened by a `dispute` command about a canonical
-- record. `dispute` holds the record's event id, its position (topic, partition, offset),
-- its owner (from the record's provenance) and the principal who disputed it; NULL on the
-- incidents of records. A dispute names the record's (dataset, record id) but is not the
-- record's incident: the record key is unique among the record incidents only, and the
-- intake never finds a dispute by it.
ALTER TABLE incidents ADD COLUMN dispute jsonb;
DROP INDEX incidents_record;
CREATE UNIQUE INDEX incidents_record ON incidents (source_unit, dataset, record_id)
    WHERE dispute IS NULL;
