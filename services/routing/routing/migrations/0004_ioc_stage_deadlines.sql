-- Deadlines of the IOC's own steps (Đ13.2): verification (received), approval
-- (verified), dispatch (approved, or returned by a unit). Their rows carry the
-- plan frozen when the incident entered the waiting state (`plan`: due time,
-- reminders, chain, calendar) and that instant (`stage_at`): an incident that
-- enters the same state again (rejected, then reopened) starts a new sequence,
-- and the rows of an earlier entry are superseded. Unit deadlines keep both NULL
-- and are told apart by assignment_no, as before.
ALTER TABLE due_work DROP CONSTRAINT IF EXISTS due_work_deadline_check;
ALTER TABLE due_work ADD CONSTRAINT due_work_deadline_check
    CHECK (deadline IN ('acknowledge', 'resolve', 'verify', 'approve', 'dispatch'));
ALTER TABLE due_work ADD COLUMN plan jsonb;
ALTER TABLE due_work ADD COLUMN stage_at timestamptz;
ALTER TABLE due_work DROP CONSTRAINT IF EXISTS due_work_incident_id_assignment_no_kind_deadline_step_key;
CREATE UNIQUE INDEX due_work_identity ON due_work
    (incident_id, assignment_no, kind, deadline, step, coalesce(stage_at, '-infinity'));

-- `overdue` lists incidents waiting for the IOC: few at any time.
CREATE INDEX incidents_waiting_for_ioc ON incidents (id)
    WHERE state IN ('received', 'verified', 'approved', 'returned');
