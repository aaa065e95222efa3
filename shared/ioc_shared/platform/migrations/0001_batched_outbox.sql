-- The outbox keeps one row per transaction: the messages it emitted, in order,
-- packed into one value. A busy service writes thousands of events per second;
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
    id             bigserial   PRIMARY KEY,
    message_count  integer     NOT NULL CHECK (message_count > 0),
    -- The messages, one after the other, each framed as ioc_shared.platform.outbox
    -- packs it: lengths, event id, topic, key, headers (JSON), value.
    messages       bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
-- Envelopes are small JSON documents and a row holds thousands: compressing them
-- cost more CPU than the relay spends on sending them. Stored out of line, as is.
ALTER TABLE outbox ALTER COLUMN messages SET STORAGE EXTERNAL;

CREATE TABLE outbox_positions (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Rows still pending in the old layout move over as one-message rows, in order.
-- (One that an old relay had claimed but not marked may be published twice;
-- consumers are idempotent by event id.)
INSERT INTO outbox (message_count, messages, created_at)
SELECT 1,
       int2send(octet_length(convert_to(topic, 'UTF8'))::smallint)
       || int4send(coalesce(octet_length(key), -1))
       || int4send(octet_length(convert_to(headers::text, 'UTF8')))
       || int4send(octet_length(value))
       || convert_to(event_id::text, 'UTF8') || convert_to(topic, 'UTF8')
       || coalesce(key, ''::bytea) || convert_to(headers::text, 'UTF8') || value,
       created_at
FROM outbox_v0 WHERE published_at IS NULL ORDER BY id;
DROP TABLE outbox_v0;
