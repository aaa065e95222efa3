-- Ingest state. Applied in the service's own schema (search_path is set).

-- Every accepted record, once per (unit, dataset, record id, content): the
-- dedupe key. `origin` is the delivery that first carried it (Kafka
-- topic:partition:offset, or an HTTP request + index): the same origin seen
-- again is a redelivery (re-publish, same event id), another origin is a
-- duplicate (reject). The same record id with different content is a new
-- revision and is accepted.
CREATE TABLE accepted_records (
    unit            text        NOT NULL,
    dataset         text        NOT NULL,
    record_id       text        NOT NULL,
    content_hash    text        NOT NULL,
    client_event_id text,
    event_id        uuid        NOT NULL,
    origin          text        NOT NULL,
    accepted_at     timestamptz NOT NULL,
    PRIMARY KEY (unit, dataset, record_id, content_hash)
);
-- A client event id is unique per unit: a second record with it is a duplicate.
CREATE UNIQUE INDEX accepted_records_client_event
    ON accepted_records (unit, client_event_id) WHERE client_event_id IS NOT NULL;
CREATE INDEX accepted_records_accepted_at ON accepted_records (accepted_at);

-- Freshness per (unit, dataset): last accepted record and the lateness episode.
CREATE TABLE freshness (
    unit              text        NOT NULL,
    dataset           text        NOT NULL,
    watch_since       timestamptz NOT NULL DEFAULT now(),
    last_accepted_at  timestamptz,
    late_since        timestamptz,
    late_deadline     timestamptz,
    checked_at        timestamptz,
    PRIMARY KEY (unit, dataset)
);

-- Accepted / rejected counters per local day, unit, dataset, outcome and code.
CREATE TABLE quality_counters (
    day          date        NOT NULL,
    unit         text        NOT NULL,
    dataset      text        NOT NULL,
    outcome      text        NOT NULL,
    code         text        NOT NULL,
    n            bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (day, unit, dataset, outcome, code)
);
CREATE INDEX quality_counters_unpublished ON quality_counters (updated_at)
    WHERE published_at IS NULL OR published_at < updated_at;
