-- Counters were once keyed by raw sender strings (a 10,000-character dataset name made
-- every later quality round fail on the envelope's subject limit; "" stood for an
-- unverified sender). Such rows are merged under 'unknown'; ingest now counts only
-- registry ids or 'unknown'. (No CHECK constraint: a violation would fail the claim
-- statement of a batch and stall its partition; the quality round bounds what it reads.)
WITH bad AS (
  DELETE FROM quality_counters
  WHERE unit !~ '^[a-z0-9][a-z0-9-]{0,62}$' OR dataset !~ '^[a-z0-9][a-z0-9-]{0,62}$'
  RETURNING day,
    CASE WHEN unit ~ '^[a-z0-9][a-z0-9-]{0,62}$' THEN unit ELSE 'unknown' END AS unit,
    CASE WHEN dataset ~ '^[a-z0-9][a-z0-9-]{0,62}$' THEN dataset ELSE 'unknown' END AS dataset,
    outcome, code, n, updated_at
)
INSERT INTO quality_counters AS q (day, unit, dataset, outcome, code, n, updated_at)
SELECT day, unit, dataset, outcome, code, sum(n), max(updated_at)
FROM bad GROUP BY day, unit, dataset, outcome, code
ON CONFLICT (day, unit, dataset, outcome, code) DO UPDATE
  SET n = q.n + EXCLUDED.n, updated_at = GREATEST(q.updated_at, EXCLUDED.updated_at),
      published_at = NULL;
