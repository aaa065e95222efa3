-- The outbox keeps one row per transaction: the messages it emitted, in order,
-- as parallel arrays. A busy service writes thousands of events per second;
-- one row per event cost the database more than the state changes themselves
-- (an insert, a claim and a mark per event, each with three index entries).
--
-- outbox_positions: for each topic partition the relay publishes to, an offset
-- at or before every message the relay sent and has not yet marked. A relay
-- that died between publishing and marking is resolved on start-up by reading
-- each partition from there (see ioc_shared.platform.outbox).
ALTER TABLE outbox RENAME TO outbox_v0;
ALTER INDEX outbox_pending RENAME TO outbox_v0_pending;

CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    event_ids     uuid[]      NOT NULL,
    topics        text[]      NOT NULL,
    keys          bytea[]     NOT NULL,
    headers       bytea[]     NOT NULL,
    payloads      bytea[]     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    CHECK (cardinality(event_ids) = cardinality(topics)
           AND cardinality(event_ids) = cardinality(keys)
           AND cardinality(event_ids) = cardinality(headers)
           AND cardinality(event_ids) = cardinality(payloads))
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
-- Envelopes are small JSON documents and a row holds thousands: compressing them
-- cost more CPU than the relay spends on sending them. Stored out of line, as is.
ALTER TABLE outbox ALTER COLUMN payloads SET STORAGE EXTERNAL,
                   ALTER COLUMN headers SET STORAGE EXTERNAL,
                   ALTER COLUMN keys SET STORAGE EXTERNAL;

CREATE TABLE outbox_positions (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Rows still pending in the old layout move over as one-message rows, in order.
-- (One that an old relay had claimed but not marked may be published twice;
-- consumers are idempotent by event id.)
INSERT INTO outbox (event_ids, topics, keys, headers, payloads, created_at)
SELECT ARRAY[event_id], ARRAY[topic], ARRAY[key], ARRAY[convert_to(headers::text, 'UTF8')],
       ARRAY[value], created_at
FROM outbox_v0 WHERE published_at IS NULL ORDER BY id;
DROP TABLE outbox_v0;
