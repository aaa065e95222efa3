-- Likely-duplicate search by grid cell. The (category, lat, lon) index made each
-- search scan every open incident of the category in a latitude band (all of
-- them, whatever their time), so its cost grew with the table. Cells of 0.01
-- degree (about 1.1 km), numbered as routing.domain.geo.cell_of numbers them,
-- turn a search into a few exact lookups narrowed by the time window.
ALTER TABLE incidents ADD COLUMN cell bigint GENERATED ALWAYS AS (
    (floor(lat * 100)::bigint + 9000) * 100000 + floor(lon * 100)::bigint + 18000) STORED;
DROP INDEX IF EXISTS incidents_near;
CREATE INDEX incidents_near ON incidents (category, cell, reported_at)
    WHERE lat IS NOT NULL AND state NOT IN ('closed', 'rejected_not_genuine', 'merged');
