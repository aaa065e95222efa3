-- The twelve-month trend of a report reads two measures over a year: an index-only scan
-- of them instead of every rollup row of the year.
CREATE INDEX incident_daily_trend ON incident_daily (measure, day) INCLUDE (n)
    WHERE measure IN ('received', 'resolved');
