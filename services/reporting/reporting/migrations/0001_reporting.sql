-- Reporting: rollups per local day (Asia/Ho_Chi_Minh), report metadata, timers.
-- Report generation reads the rollup tables only; their size grows with
-- days x units x communes x categories, never with events.

-- Incidents: every flow, duration bucket and current-state count (see
-- reporting.domain.incidents for the measures). Changed only by deltas.
CREATE TABLE incident_daily (
    day       date   NOT NULL,
    measure   text   NOT NULL,
    unit      text   NOT NULL,
    commune   text   NOT NULL,
    category  text   NOT NULL,
    source    text   NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (day, measure, unit, commune, category, source)
);

-- One row per incident: the transitions seen so far (compact JSON), what the incident
-- last contributed to incident_daily, and its current state for the overdue list.
CREATE TABLE incidents (
    incident_id     text        PRIMARY KEY,
    transitions     jsonb       NOT NULL,
    contribution    jsonb       NOT NULL,
    state           text,
    unit            text,
    category        text        NOT NULL DEFAULT '',
    commune         text        NOT NULL DEFAULT '',
    received_at     timestamptz,
    assigned_at     timestamptz,
    ack_due_at      timestamptz,
    resolve_due_at  timestamptz,
    acknowledged    boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_open_due ON incidents (resolve_due_at)
    WHERE state IN ('assigned', 'acknowledged', 'in_progress');

-- Data sharing. Quality counters are cumulative per day: the latest snapshot wins.
CREATE TABLE quality_daily (
    day       date        NOT NULL,
    unit      text        NOT NULL,
    dataset   text        NOT NULL,
    accepted  bigint      NOT NULL,
    rejected  jsonb       NOT NULL,     -- reason code -> count
    as_of     timestamptz NOT NULL,
    PRIMARY KEY (day, unit, dataset)
);

-- Rejections as sent to units, counted by reason (each event once).
CREATE TABLE rejections_daily (
    day      date   NOT NULL,
    unit     text   NOT NULL,
    dataset  text   NOT NULL,
    code     text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (day, unit, dataset, code)
);

-- Freshness: late episodes and recoveries per day, unit and dataset.
CREATE TABLE freshness_daily (
    day        date   NOT NULL,
    unit       text   NOT NULL,
    dataset    text   NOT NULL,
    late       bigint NOT NULL DEFAULT 0,
    recovered  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, unit, dataset)
);

-- Indicator datasets: one row per record (its latest version) and the daily aggregates.
CREATE TABLE indicator_records (
    dataset       text        NOT NULL,
    record_id     text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    event_id      uuid        NOT NULL,
    contribution  jsonb       NOT NULL,
    PRIMARY KEY (dataset, record_id)
);

CREATE TABLE indicator_daily (
    day        date             NOT NULL,
    dataset    text             NOT NULL,
    commune    text             NOT NULL,
    unit       text             NOT NULL,
    indicator  text             NOT NULL,
    n          bigint           NOT NULL,
    total      double precision NOT NULL,
    PRIMARY KEY (day, dataset, commune, unit, indicator)
);

-- Reports: one row per version; an issued version is never changed again.
CREATE TABLE reports (
    report_id    uuid        PRIMARY KEY,
    kind         text        NOT NULL,     -- monthly, quarterly, six-monthly, annual, thematic, ad-hoc
    period_key   text        NOT NULL,     -- e.g. monthly:2026-11
    period_start date        NOT NULL,
    period_end   date        NOT NULL,
    scope        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version      integer     NOT NULL,
    status       text        NOT NULL,     -- draft, submitted, approved, issued, sent
    number       text,
    number_seq   integer,
    issued_on    date,
    figures      jsonb       NOT NULL,
    files        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    history      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    UNIQUE (period_key, version)
);
CREATE INDEX reports_period ON reports (period_key, version DESC);

-- Document numbers per year and type: Số: 07/BC-IOC.
CREATE TABLE report_numbers (
    year   integer NOT NULL,
    type   text    NOT NULL,
    last   integer NOT NULL,
    PRIMARY KEY (year, type)
);

-- Commands already answered (idempotent by principal and command id).
CREATE TABLE commands (
    principal   text        NOT NULL,
    command_id  uuid        NOT NULL,
    verb        text        NOT NULL,
    status      text        NOT NULL,
    reason      text,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, command_id)
);

-- Timers of the periodic reports: draft, due-soon, overdue, each fired once.
CREATE TABLE report_timers (
    period_key  text        NOT NULL,
    action      text        NOT NULL,     -- draft, due-soon, overdue
    due_at      timestamptz NOT NULL,
    fired_at    timestamptz,
    fired_by    text,
    PRIMARY KEY (period_key, action)
);
CREATE INDEX report_timers_pending ON report_timers (due_at) WHERE fired_at IS NULL;
