-- Share log (Đ4.1, Đ11.2): one hash-chained entry per shipment; never updated or deleted.
CREATE TABLE share_log (
    seq          bigint PRIMARY KEY,
    at           text NOT NULL,            -- UTC ISO 8601, as hashed
    target       text NOT NULL,
    stream       text NOT NULL,
    kind         text NOT NULL,            -- ship, resend, repair
    source_topic text NOT NULL,
    partition    integer NOT NULL,
    first_offset bigint NOT NULL,
    next_offset  bigint NOT NULL,
    event_ids    text[] NOT NULL,
    fields       text[] NOT NULL,
    grant_ids    text[] NOT NULL,
    batch_hash   text NOT NULL,
    prev_hash    text NOT NULL,
    entry_hash   text NOT NULL
);

-- Signed heads of the chain, as sent to the province.
CREATE TABLE share_checkpoints (
    id         bigserial PRIMARY KEY,
    head_seq   bigint NOT NULL,
    head_hash  text NOT NULL,
    signed_at  text NOT NULL,
    public_key text NOT NULL,              -- hex, raw Ed25519
    signature  text NOT NULL,              -- hex
    sent_to    text[] NOT NULL DEFAULT '{}'
);

-- Batches the province refused (4xx other than 429), with its answer, for an operator.
CREATE TABLE failed_sync (
    id            bigserial PRIMARY KEY,
    target        text NOT NULL,
    stream        text NOT NULL,
    source_topic  text NOT NULL,
    partition     integer NOT NULL,
    first_offset  bigint NOT NULL,
    next_offset   bigint NOT NULL,
    event_ids     text[] NOT NULL,
    status_code   integer NOT NULL,
    answer        text NOT NULL,
    batch_hash    text NOT NULL,
    parked_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);

-- Operator switches: a paused (target, stream); '*' stands for every target or stream.
CREATE TABLE sync_control (
    target    text NOT NULL,
    stream    text NOT NULL,
    paused    boolean NOT NULL,
    set_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, stream)
);

-- Work asked by the CLI (re-send a time range, reconcile a day), done by the service.
CREATE TABLE sync_requests (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,             -- resend, reconcile
    target      text NOT NULL,
    stream      text NOT NULL,
    from_ms     bigint NOT NULL,
    to_ms       bigint NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    result      jsonb
);
