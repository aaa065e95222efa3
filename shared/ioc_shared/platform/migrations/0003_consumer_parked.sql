-- Records a DurableConsumer (ioc_shared.platform.consumer) gave up on: the handler still
-- failed after the policy's attempts for a reason that was not a dependency being down.
-- Kept byte for byte (key, value, headers) so an operator can replay them to their topic
-- once the cause is fixed (`python -m <service> parked replay`). One row per record and
-- consumer: a redelivered batch parks its record again without a second row.
CREATE TABLE consumer_parked (
    id           bigserial   PRIMARY KEY,
    consumer     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    -- [{"name": ..., "value": ...}] in order; "value_b64"/"name_b64" where the bytes are
    -- not UTF-8 text that jsonb can hold (it refuses NUL).
    headers      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error        text        NOT NULL,
    attempts     integer     NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz,
    UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX consumer_parked_waiting ON consumer_parked (consumer, id) WHERE replayed_at IS NULL;
