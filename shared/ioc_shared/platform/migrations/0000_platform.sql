-- Platform tables, created in each service's own schema (search_path is set).

-- Idempotent consumption: one row per (consumer, event id), written in the
-- same transaction as the state change it guards.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Transactional outbox: events written with the state change, published by
-- the relay. `partition`/`claim_offset` record where a claimed row is going,
-- so a relay that crashed between publish and mark can tell what already
-- reached the broker.
CREATE TABLE IF NOT EXISTS outbox (
    id            bigserial   PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    key           bytea,
    headers       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    value         bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at    timestamptz,
    partition     integer,
    claim_offset  bigint,
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL;
