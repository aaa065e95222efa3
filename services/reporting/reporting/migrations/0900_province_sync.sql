-- Records sent to the province, from sync-province's status snapshots
-- (reporting/domain/province_sync.py): the last snapshot applied per target and stream
-- (stream '' holds the target's own failure counters), and what the snapshots added per
-- local day.
CREATE TABLE sync_baselines (
    target       text        NOT NULL,
    stream       text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    counters     jsonb       NOT NULL,     -- counters of the last snapshot applied
    positions    jsonb       NOT NULL,     -- highest source position seen per partition
    PRIMARY KEY (target, stream)
);

CREATE TABLE sync_daily (
    day             date        NOT NULL,
    target          text        NOT NULL,
    stream          text        NOT NULL,  -- a dataset id, or an event topic
    sent            bigint      NOT NULL,
    parked          bigint      NOT NULL,
    last_synced_at  timestamptz,
    PRIMARY KEY (day, target, stream)
);

CREATE TABLE sync_failures_daily (
    day     date   NOT NULL,
    target  text   NOT NULL,
    reason  text   NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (day, target, reason)
);
