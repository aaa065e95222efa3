-- Record ids belong to the unit that publishes them: an incident is the record of one
-- (source unit, dataset, record id). Ids of new incidents derive from the three
-- (routing.domain.model.incident_id_for); incidents recorded before this migration keep
-- their ids (derived from dataset and record id) and are found by this key like the rest.
-- The key was already unique (the old id was unique per dataset and record id).
CREATE UNIQUE INDEX incidents_record ON incidents (source_unit, dataset, record_id);

-- Every command received is recorded with its outcome, authenticated or not. `decided`
-- marks the one row per (principal, command id) that holds the decision (a repeat is
-- answered with it); rows refused at the door (unauthenticated, unreadable, unknown) and
-- repeats are receipts. Text columns hold bounded text without forbidden characters;
-- what was received travels only in `raw` (bounded), for the record.
ALTER TABLE commands DROP CONSTRAINT commands_pkey;
ALTER TABLE commands ALTER COLUMN principal DROP NOT NULL,
                     ALTER COLUMN command_id DROP NOT NULL;
ALTER TABLE commands ADD COLUMN id bigserial PRIMARY KEY,
                     ADD COLUMN decided boolean NOT NULL DEFAULT true,
                     ADD COLUMN cause_id uuid,
                     ADD COLUMN claimed_principal text,
                     ADD COLUMN origin text,
                     ADD COLUMN raw bytea;
CREATE UNIQUE INDEX commands_decision ON commands (principal, command_id) WHERE decided;
-- A redelivered record (same topic/partition/offset) is told from a copy at another offset.
CREATE INDEX commands_origin ON commands (origin);

-- Canonical records the intake refused (not from ingest, unreadable, unusable): an
-- internal error upstream or a hostile producer. Where to find each one again (the
-- record itself stays on its topic: it may carry personal data), and why.
CREATE TABLE refused_records (
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    event_id         uuid,
    source_unit      text,
    reason_code      text        NOT NULL,
    detail           text        NOT NULL,
    refused_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
