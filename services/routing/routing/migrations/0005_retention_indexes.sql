-- Retention deletes commands by age (received_at, 400 days by default). received_at is
-- set at insert, in insertion order: a BRIN index finds the old rows at almost no cost
-- per command. (due_work needs none: retention looks at its done rows only, a few per
-- incident.)
CREATE INDEX commands_received_at ON commands USING brin (received_at);
