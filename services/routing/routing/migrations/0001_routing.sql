-- Routing state. search_path is the service schema (default `routing`).

-- The parts of policy snapshots that many incidents share (escalation chain,
-- reminders, calendar), stored once per version (a hash of their content).
CREATE TABLE policy_versions (
    version          text        PRIMARY KEY,
    body             jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per incident, i.e. per (dataset, record id). `policy` is the
-- snapshot of the rule, deadlines and escalation chain in force at assignment
-- (its shared parts by reference to policy_versions).
CREATE TABLE incidents (
    id               text        PRIMARY KEY,
    dataset          text        NOT NULL,
    record_id        text        NOT NULL,
    source_unit      text        NOT NULL,
    category         text        NOT NULL,
    priority         text        NOT NULL,
    commune          text        NOT NULL,
    reported_at      timestamptz NOT NULL,
    title            text        NOT NULL DEFAULT '',
    lat              double precision,
    lon              double precision,
    reporter_ref     text,
    state            text        NOT NULL,
    assigned_unit    text,
    last_unit        text,
    assignment_no    integer     NOT NULL DEFAULT 0,
    primary_id       text        REFERENCES incidents (id),
    policy           jsonb,
    ack_due_at       timestamptz,
    resolve_due_at   timestamptz,
    survey_answered  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (dataset, record_id)
);
-- Likely-duplicate search: open incidents of a category inside a lat/lon box.
CREATE INDEX incidents_near ON incidents (category, lat, lon)
    WHERE lat IS NOT NULL AND state NOT IN ('closed', 'rejected_not_genuine', 'merged');
-- Overdue views.
CREATE INDEX incidents_ack_overdue ON incidents (ack_due_at) WHERE state = 'assigned';
CREATE INDEX incidents_resolve_overdue ON incidents (resolve_due_at)
    WHERE state IN ('assigned', 'acknowledged', 'in_progress');
CREATE INDEX incidents_primary ON incidents (primary_id) WHERE primary_id IS NOT NULL;

-- The audit trail: every transition (and note) with actor, unit, time and reason.
CREATE TABLE transitions (
    id               bigserial   PRIMARY KEY,
    incident_id      text        NOT NULL REFERENCES incidents (id),
    event_id         uuid        NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    from_state       text,
    to_state         text        NOT NULL,
    actor_principal  text        NOT NULL,
    actor_unit       text        NOT NULL,
    reason           text,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX transitions_incident ON transitions (incident_id, id);

-- Commands are idempotent by (principal, command id): the answer is decided once.
CREATE TABLE commands (
    principal        text        NOT NULL,
    command_id       uuid        NOT NULL,
    incident_id      text,
    verb             text,
    status           text        NOT NULL,
    reason_code      text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, command_id)
);

-- Due work (reminders, escalation steps) survives restarts and is picked by
-- whichever instance runs (FOR UPDATE SKIP LOCKED): fired once, or skipped
-- when the incident no longer waits for what the deadline asked.
CREATE TABLE due_work (
    id               bigserial   PRIMARY KEY,
    incident_id      text        NOT NULL REFERENCES incidents (id),
    assignment_no    integer     NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('reminder', 'escalation')),
    deadline         text        NOT NULL CHECK (deadline IN ('acknowledge', 'resolve')),
    step             integer     NOT NULL,
    due_at           timestamptz NOT NULL,
    fired_at         timestamptz,
    skipped_at       timestamptz,
    fired_by         text,
    UNIQUE (incident_id, assignment_no, kind, deadline, step)
);
CREATE INDEX due_work_pending ON due_work (due_at) WHERE fired_at IS NULL AND skipped_at IS NULL;

-- Đ10.5: satisfaction, attributed to the incident and the unit that handled it.
CREATE TABLE survey_answers (
    incident_id      text        PRIMARY KEY REFERENCES incidents (id),
    unit             text,
    score            integer     NOT NULL,
    comment          text,
    principal        text        NOT NULL,
    answered_at      timestamptz NOT NULL
);
