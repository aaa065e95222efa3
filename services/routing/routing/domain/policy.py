"""The routing policy as configured in `config/routing.yaml` (validated data, no I/O).

Reading the file and naming problems with file and entry live in
`routing.config`; cross-checks against the organisation are in
`validate_policy` below so that they can be tested without files.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from ioc_shared.calendar_vn import (
    DEFAULT_TIMEZONE,
    WorkingCalendar,
    parse_period,
    parse_weekdays,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from routing.domain.organisation import Organisation

PRIORITIES = ("thap", "binh-thuong", "cao", "khan-cap")

# Unit targets resolved per incident rather than named in advance.
TARGET_COMMUNE = "@commune"    # the commune (or town) where it happened, by commune id
TARGET_AREA = "@area"          # the commune whose centre is nearest to the coordinates
TARGET_OWNER = "@owner"        # the unit whose record it is about (a data dispute's owner)
TARGETS = (TARGET_COMMUNE, TARGET_AREA, TARGET_OWNER)
RECIPIENT_ASSIGNED = "@assigned"
RECIPIENT_IOC = "@ioc"
RECIPIENT_DISTRICT = "@district"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Duration(_Strict):
    """Exactly one of working time (office hours only) or wall-clock time."""

    working_days: int | None = Field(default=None, ge=0)
    working_hours: float | None = Field(default=None, ge=0)
    hours: float | None = Field(default=None, ge=0)
    minutes: float | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Duration:
        given = [name for name, value in self.__dict__.items() if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of working_days, working_hours, hours, minutes, "
                             f"seconds (got {given or 'none'})")
        return self

    def after(self, start: datetime, calendar: WorkingCalendar) -> datetime:
        if self.working_days is not None:
            return calendar.add_working_days(start, self.working_days)
        if self.working_hours is not None:
            return calendar.add_working_hours(start, self.working_hours)
        return start + self.wall_clock()

    def before(self, end: datetime, calendar: WorkingCalendar) -> datetime:
        """The instant this long before `end` (working days count as full office days)."""
        if self.working_days is not None:
            return calendar.subtract_working_seconds(end, self.working_days * calendar.seconds_per_day)
        if self.working_hours is not None:
            return calendar.subtract_working_seconds(end, self.working_hours * 3600)
        return end - self.wall_clock()

    def in_working_time(self) -> bool:
        return self.working_days is not None or self.working_hours is not None

    def wall_clock(self) -> timedelta:
        return timedelta(hours=self.hours or 0, minutes=self.minutes or 0, seconds=self.seconds or 0)

    def describe(self) -> str:
        for name, value in self.__dict__.items():
            if value is not None:
                return f"{value:g} {name.replace('_', ' ')}"
        return "?"  # pragma: no cover - the validator forbids it


class OfficeHours(_Strict):
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    periods: tuple[str, ...] = ("07:30-11:30", "13:30-17:00")


class CalendarConfig(_Strict):
    timezone: str = DEFAULT_TIMEZONE
    office_hours: OfficeHours = OfficeHours()
    extra_days_off: tuple[date, ...] = ()
    # Saturdays (or other days) worked in exchange for a bridge day off.
    compensatory_working_days: tuple[date, ...] = ()

    def build(self) -> WorkingCalendar:
        return WorkingCalendar(
            timezone=self.timezone,
            periods=tuple(parse_period(p) for p in self.office_hours.periods),
            weekdays=parse_weekdays(self.office_hours.days),
            extra_days_off=frozenset(self.extra_days_off),
            extra_working_days=frozenset(self.compensatory_working_days),
        )


class Conditions(_Strict):
    """All given conditions must hold; each lists the accepted values."""

    category: tuple[str, ...] = ()
    priority: tuple[str, ...] = ()
    commune: tuple[str, ...] = ()     # commune id given in the record
    area: tuple[str, ...] = ()        # commune derived from the coordinates
    source_unit: tuple[str, ...] = ()
    dataset: tuple[str, ...] = ()


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")
    description: str = ""
    when: Conditions = Conditions()
    unit: str = Field(min_length=1)   # unit id, @commune, @area or @owner


class DefaultRule(_Strict):
    unit: str = Field(min_length=1)
    description: str = "Quy tắc mặc định"


class _Matched(Protocol):
    @property
    def category(self) -> tuple[str, ...]: ...

    @property
    def priority(self) -> tuple[str, ...]: ...


_E = TypeVar("_E", bound=_Matched)


class DeadlineEntry(_Strict):
    category: tuple[str, ...] = ()    # empty: any
    priority: tuple[str, ...] = ()
    acknowledge: Duration
    resolve: Duration


class EscalationStep(_Strict):
    level: Literal["unit-officer", "unit-head", "ioc-leader", "district-leadership"]
    after: Duration                    # measured from the passed deadline
    recipients: tuple[str, ...]        # unit ids, @assigned, @ioc, @district
    contact_roles: tuple[Literal["data-officer", "incident-officer", "head", "leader"], ...]


class ReminderTarget(_Strict):
    """Who a reminder goes to, resolved like an escalation step (contacts from the registry)."""

    recipients: tuple[str, ...] = (RECIPIENT_ASSIGNED,)
    contact_roles: tuple[Literal["data-officer", "incident-officer", "head", "leader"], ...] = (
        "incident-officer",)


class Escalation(_Strict):
    """Reminders and the escalation chain of the incidents one entry matches.

    Entries are matched like the deadlines (first match by category and priority;
    the last must match everything). A chain or reminder in working time for
    emergencies must say so with `emergency_in_working_time: true`: otherwise an
    emergency missed on a Friday evening before Tết reaches its next level after
    the holiday.
    """

    category: tuple[str, ...] = ()    # empty: any
    priority: tuple[str, ...] = ()
    reminders_before: tuple[Duration, ...] = ()
    remind: ReminderTarget = ReminderTarget()
    chain: tuple[EscalationStep, ...] = Field(min_length=1)
    emergency_in_working_time: bool = False

    def working_time_parts(self) -> list[str]:
        """Labels of the reminders and steps counted in office time."""
        found = [f"reminders_before[{i}]" for i, r in enumerate(self.reminders_before)
                 if r.in_working_time()]
        found += [f"chain[{i}] (level={s.level})" for i, s in enumerate(self.chain)
                  if s.after.in_working_time()]
        return found


# The IOC's own steps (Đ13.2: verify, the leader approves, forward quickly) and the
# states that wait for them; `dispatch` is the assignment of an approved or returned incident.
IOC_STAGE_STATES: dict[str, tuple[str, ...]] = {
    "verify": ("received",),
    "approve": ("verified",),
    "dispatch": ("approved", "returned"),
}


class IocDeadlines(Escalation):
    """Deadlines of the IOC's own steps, with their reminders and chain (to the IOC leader)."""

    verify: Duration
    approve: Duration
    dispatch: Duration
    remind: ReminderTarget = ReminderTarget(recipients=(RECIPIENT_IOC,))

    def within(self, stage: str) -> Duration:
        found: Duration = getattr(self, stage)
        return found


class Automation(_Strict):
    """Categories whose incidents the IOC verifies, approves and assigns without a human."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")
    category: tuple[str, ...] = Field(min_length=1)
    priority: tuple[str, ...] = ()
    dataset: tuple[str, ...] = ()
    verify: bool = False
    approve: bool = False
    assign: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Automation:
        if self.approve and not self.verify:
            raise ValueError("approve: true needs verify: true (Đ13.2: verify before approving)")
        if self.assign and not self.approve:
            raise ValueError("assign: true needs approve: true (approval comes before dispatch)")
        return self


class Duplicates(_Strict):
    radius_m: float = Field(default=200.0, gt=0, le=50_000)
    window: Duration = Duration(hours=48)
    max_candidates: int = Field(default=3, ge=1, le=20)


class Disputes(_Strict):
    """Data disputes (Đ4.5): routed by the rules (stock: `@owner`, the record's owner).
    When the unit found does not handle incidents (the IOC itself, the district, a
    provincial body), the dispute goes to `fallback_unit` (default: the IOC), whose
    `contact_roles` (stock: its data officer) are told."""

    fallback_unit: str | None = None
    contact_roles: tuple[str, ...] = ("data-officer", "head")


class Survey(_Strict):
    question: str = "Ông/Bà có hài lòng với kết quả xử lý phản ánh không?"
    min_score: int = 1
    max_score: int = 5


def _first(entries: tuple[_E, ...], category: str, priority: str) -> tuple[int, _E]:
    for index, entry in enumerate(entries):
        if ((not entry.category or category in entry.category)
                and (not entry.priority or priority in entry.priority)):
            return index, entry
    raise LookupError("no entry matches")  # validate_policy forbids it


class RoutingPolicy(_Strict):
    calendar: CalendarConfig = CalendarConfig()
    rules: tuple[Rule, ...] = ()
    default: DefaultRule
    deadlines: tuple[DeadlineEntry, ...] = Field(min_length=1)
    escalation: tuple[Escalation, ...] = Field(min_length=1)
    # Empty: the IOC's own steps have no deadline.
    ioc_deadlines: tuple[IocDeadlines, ...] = ()
    automation: tuple[Automation, ...] = ()
    duplicates: Duplicates = Duplicates()
    disputes: Disputes = Disputes()
    survey: Survey = Survey()

    @field_validator("escalation", mode="before")
    @classmethod
    def _one_chain_for_all(cls, value: Any) -> Any:
        # The earlier form: one mapping for every incident.
        return [value] if isinstance(value, dict) else value

    def deadline_for(self, category: str, priority: str) -> tuple[int, DeadlineEntry]:
        return _first(self.deadlines, category, priority)

    def escalation_for(self, category: str, priority: str) -> tuple[int, Escalation]:
        return _first(self.escalation, category, priority)

    def ioc_deadlines_for(self, category: str, priority: str) -> tuple[int, IocDeadlines] | None:
        return _first(self.ioc_deadlines, category, priority) if self.ioc_deadlines else None

    def automation_for(self, dataset: str, category: str, priority: str) -> Automation | None:
        for entry in self.automation:
            if (category in entry.category
                    and (not entry.priority or priority in entry.priority)
                    and (not entry.dataset or dataset in entry.dataset)):
                return entry
        return None


def validate_policy(policy: RoutingPolicy, org: Organisation) -> list[str]:
    """Cross-checks against the organisation; each problem names its entry."""
    problems: list[str] = []
    categories, priorities = org.categories, set(PRIORITIES)

    def unknown(label: str, kind: str, values: tuple[str, ...], known: set[str] | frozenset[str]) -> None:
        bad = [v for v in values if v not in known]
        if bad:
            problems.append(f"{label}: unknown {kind} {bad}")

    def check_target(label: str, unit: str) -> None:
        if unit not in TARGETS and unit not in org.unit_ids:
            problems.append(f"{label}: unit '{unit}' is not a unit of the registry "
                            f"(nor {' / '.join(TARGETS)})")

    seen: set[str] = set()
    for i, rule in enumerate(policy.rules):
        label = f"rules[{i}] (id={rule.id})"
        if rule.id in seen:
            problems.append(f"{label}: duplicate rule id")
        seen.add(rule.id)
        unknown(label, "category", rule.when.category, categories)
        unknown(label, "priority", rule.when.priority, priorities)
        unknown(label, "commune", rule.when.commune, org.commune_ids)
        unknown(label, "area", rule.when.area, org.commune_ids)
        unknown(label, "source unit", rule.when.source_unit, org.unit_ids)
        unknown(label, "incident dataset", rule.when.dataset, org.incident_datasets)
        check_target(label, rule.unit)
    check_target("default", policy.default.unit)
    def check_chain(label: str, esc: Escalation) -> None:
        unknown(label, "category", esc.category, categories)
        unknown(label, "priority", esc.priority, priorities)
        for recipient in esc.remind.recipients:
            check_recipient(f"{label}.remind", recipient)
        for i, step in enumerate(esc.chain):
            for recipient in step.recipients:
                check_recipient(f"{label}.chain[{i}] (level={step.level})", recipient)
        offsets = [s.after.wall_clock() for s in esc.chain if not s.after.in_working_time()]
        if offsets != sorted(offsets):
            problems.append(f"{label}.chain: wall-clock 'after' offsets must not decrease")

    def check_recipient(label: str, recipient: str) -> None:
        if (recipient not in (RECIPIENT_ASSIGNED, RECIPIENT_IOC, RECIPIENT_DISTRICT)
                and recipient not in org.unit_ids):
            problems.append(f"{label}: unknown recipient '{recipient}'")

    for i, entry in enumerate(policy.deadlines):
        unknown(f"deadlines[{i}]", "category", entry.category, categories)
        unknown(f"deadlines[{i}]", "priority", entry.priority, priorities)
    if policy.deadlines[-1].category or policy.deadlines[-1].priority:
        problems.append(f"deadlines[{len(policy.deadlines) - 1}]: the last entry must match "
                        "every incident (no category, no priority)")
    emergency = "khan-cap"
    for label, entries in (("escalation", policy.escalation),
                           ("ioc_deadlines", policy.ioc_deadlines)):
        for i, esc in enumerate(entries):
            check_chain(f"{label}[{i}]", esc)
            if label == "ioc_deadlines" and RECIPIENT_ASSIGNED in (
                    *esc.remind.recipients, *(r for st in esc.chain for r in st.recipients)):
                problems.append(f"{label}[{i}]: {RECIPIENT_ASSIGNED} means nothing while the "
                                "IOC holds the incident (use @ioc, @district or a unit id)")
        if entries and (entries[-1].category or entries[-1].priority):
            problems.append(f"{label}[{len(entries) - 1}]: the last entry must match every "
                            "incident (no category, no priority)")
        # The entries emergencies meet (any category): they run around the clock unless
        # the operator says otherwise, in so many words.
        met = {_first(entries, c, emergency)[0] for c in categories | {""}} if entries else set()
        for i in sorted(met):
            esc = entries[i]
            parts = esc.working_time_parts()
            if parts and not esc.emergency_in_working_time:
                problems.append(
                    f"{label}[{i}]: emergencies ({emergency}) follow this entry but "
                    f"{', '.join(parts)} count office time (an emergency missed on a Friday "
                    "evening would wait for Monday, or for the end of Tết); use wall-clock "
                    "hours/minutes, or add a first entry for priority khan-cap, or set "
                    "emergency_in_working_time: true")
    seen = set()
    for i, auto in enumerate(policy.automation):
        label = f"automation[{i}] (id={auto.id})"
        if auto.id in seen:
            problems.append(f"{label}: duplicate automation id")
        seen.add(auto.id)
        unknown(label, "category", auto.category, categories)
        unknown(label, "priority", auto.priority, priorities)
        unknown(label, "incident dataset", auto.dataset, org.incident_datasets)
    fallback = policy.disputes.fallback_unit
    if fallback is not None and fallback not in org.unit_ids:
        problems.append(f"disputes.fallback_unit: '{fallback}' is not a unit of the registry")
    if policy.survey.min_score >= policy.survey.max_score:
        problems.append("survey: min_score must be below max_score")
    try:
        policy.calendar.build()
    except ValueError as exc:
        problems.append(f"calendar: {exc}")
    return problems
