-- The twelve-month trend of a report: received and resolved per calendar month (local),
-- kept with the same deltas as incident_daily, so it reads 24 rows instead of a year's.
CREATE TABLE incident_monthly (
    month    date   NOT NULL,
    measure  text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (month, measure)
);
