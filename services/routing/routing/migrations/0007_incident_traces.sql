-- The W3C traceparent of the span that received the incident (routing's intake span, a
-- child of the unit's publish through ingest): commands, timers and everything later done
-- to the incident continue this trace, so one trace follows a report to its closure.
-- NULL on incidents received before it was kept (their later steps start their own).
ALTER TABLE incidents ADD COLUMN traceparent text;
