-- Outbox messages too large for the broker (over its max.message.bytes) would fail on
-- every attempt and block the relay. The relay parks them here instead, in the same
-- transaction that marks their row published, and goes on: nothing is lost, nothing
-- blocks. An operator fixes the cause and re-publishes them (or drops them) by hand.
CREATE TABLE outbox_parked (
    event_id   text        PRIMARY KEY,
    row_id     bigint      NOT NULL,
    topic      text        NOT NULL,
    key        bytea,
    headers    jsonb       NOT NULL,
    payload    bytea       NOT NULL,
    size       integer     NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE outbox_parked ALTER COLUMN payload SET STORAGE EXTERNAL;
