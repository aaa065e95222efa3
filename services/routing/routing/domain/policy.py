"""The routing policy as configured in `config/routing.yaml` (validated data, no I/O).

Reading the file and naming problems with file and entry live in
`routing.config`; cross-checks against the organisation are in
`validate_policy` below so that they can be tested without files.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routing.domain.calendar import (
    DEFAULT_TIMEZONE,
    WorkingCalendar,
    parse_period,
    parse_weekdays,
)
from routing.domain.organisation import Organisation

PRIORITIES = ("thap", "binh-thuong", "cao", "khan-cap")

# Unit targets resolved per incident rather than named in advance.
TARGET_COMMUNE = "@commune"    # the commune (or town) where it happened, by commune id
TARGET_AREA = "@area"          # the commune whose centre is nearest to the coordinates
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
    unit: str = Field(min_length=1)   # unit id, @commune or @area


class DefaultRule(_Strict):
    unit: str = Field(min_length=1)
    description: str = "Quy tắc mặc định"


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


class Escalation(_Strict):
    reminders_before: tuple[Duration, ...] = ()
    chain: tuple[EscalationStep, ...] = Field(min_length=1)


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


class Survey(_Strict):
    question: str = "Ông/Bà có hài lòng với kết quả xử lý phản ánh không?"
    min_score: int = 1
    max_score: int = 5


class RoutingPolicy(_Strict):
    calendar: CalendarConfig = CalendarConfig()
    rules: tuple[Rule, ...] = ()
    default: DefaultRule
    deadlines: tuple[DeadlineEntry, ...] = Field(min_length=1)
    escalation: Escalation
    automation: tuple[Automation, ...] = ()
    duplicates: Duplicates = Duplicates()
    survey: Survey = Survey()

    def deadline_for(self, category: str, priority: str) -> tuple[int, DeadlineEntry]:
        for index, entry in enumerate(self.deadlines):
            if ((not entry.category or category in entry.category)
                    and (not entry.priority or priority in entry.priority)):
                return index, entry
        raise LookupError("no deadline entry matches")  # validate_policy forbids it

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
        if unit not in (TARGET_COMMUNE, TARGET_AREA) and unit not in org.unit_ids:
            problems.append(f"{label}: unit '{unit}' is not a unit of the registry "
                            f"(nor {TARGET_COMMUNE} / {TARGET_AREA})")

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
    for i, entry in enumerate(policy.deadlines):
        unknown(f"deadlines[{i}]", "category", entry.category, categories)
        unknown(f"deadlines[{i}]", "priority", entry.priority, priorities)
    if policy.deadlines[-1].category or policy.deadlines[-1].priority:
        problems.append(f"deadlines[{len(policy.deadlines) - 1}]: the last entry must match "
                        "every incident (no category, no priority)")
    for i, step in enumerate(policy.escalation.chain):
        for recipient in step.recipients:
            if (recipient not in (RECIPIENT_ASSIGNED, RECIPIENT_IOC, RECIPIENT_DISTRICT)
                    and recipient not in org.unit_ids):
                problems.append(f"escalation.chain[{i}] (level={step.level}): unknown recipient "
                                f"'{recipient}'")
    offsets = [step.after.wall_clock() if step.after.working_days is None
               and step.after.working_hours is None else None for step in policy.escalation.chain]
    known = [o for o in offsets if o is not None]
    if known != sorted(known):
        problems.append("escalation.chain: wall-clock 'after' offsets must not decrease")
    seen = set()
    for i, auto in enumerate(policy.automation):
        label = f"automation[{i}] (id={auto.id})"
        if auto.id in seen:
            problems.append(f"{label}: duplicate automation id")
        seen.add(auto.id)
        unknown(label, "category", auto.category, categories)
        unknown(label, "priority", auto.priority, priorities)
        unknown(label, "incident dataset", auto.dataset, org.incident_datasets)
    if policy.survey.min_score >= policy.survey.max_score:
        problems.append("survey: min_score must be below max_score")
    try:
        policy.calendar.build()
    except ValueError as exc:
        problems.append(f"calendar: {exc}")
    return problems
