"""config/reporting.yaml -> `ReportingConfig` (validated against the registry)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from ioc_shared.calendar_vn import WorkingCalendar
from ioc_shared.registry import Registry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reporting.domain.allowances import Rate, StaffMember
from reporting.domain.periods import Kind, PeriodRules


class ReportingConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


class IssuingBody(_Strict):
    parent: str
    name: str
    place: str
    number_suffix: str = "BC-IOC"
    subject: str

    _norm = field_validator("parent", "name", "place", "subject", mode="before")(_nfc)


class Signer(_Strict):
    authority: str = ""
    title: str
    name: str

    _norm = field_validator("authority", "title", "name", mode="before")(_nfc)


class Leader(_Strict):
    unit: str
    role: str = "leader"


class MonthDay(_Strict):
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)


class Periods(_Strict):
    cut_off: str = Field(default="decree-09", pattern="^(decree-09|calendar)$")
    due_day: int = Field(default=25, ge=2, le=28)
    six_monthly_due: MonthDay = MonthDay(month=6, day=25)
    annual_due: MonthDay = MonthDay(month=12, day=25)
    draft_working_days_before: int = Field(default=3, ge=0, le=20)
    due_soon_working_days_before: int = Field(default=2, ge=0, le=20)
    kinds: tuple[Kind, ...] = (Kind.MONTHLY, Kind.QUARTERLY, Kind.SIX_MONTHLY, Kind.ANNUAL)


class CalendarConfig(_Strict):
    extra_days_off: tuple[date, ...] = ()
    extra_working_days: tuple[date, ...] = ()


class RateEntry(_Strict):
    kind: str
    amount: int = Field(ge=0)
    from_: date = Field(alias="from")


class StaffEntry(_Strict):
    id: str
    title: str
    unit: str
    kind: str
    from_: date = Field(alias="from")
    to: date | None = None

    _norm = field_validator("title", mode="before")(_nfc)


class Allowances(_Strict):
    basis: str
    rates: tuple[RateEntry, ...]
    staff: tuple[StaffEntry, ...] = ()


class _File(_Strict):
    issuing_body: IssuingBody
    signer: Signer
    recipients: tuple[str, ...]
    leader: Leader
    periods: Periods = Periods()
    calendar: CalendarConfig = CalendarConfig()
    allowances: Allowances


@dataclass(frozen=True)
class ReportingConfig:
    issuing_body: IssuingBody
    signer: Signer
    recipients: tuple[str, ...]
    leader: Leader
    periods: Periods
    calendar_config: CalendarConfig
    allowance_basis: str
    rates: list[Rate]
    staff: list[StaffMember]

    @property
    def rules(self) -> PeriodRules:
        p = self.periods
        return PeriodRules(p.cut_off, p.due_day, (p.six_monthly_due.month, p.six_monthly_due.day),
                           (p.annual_due.month, p.annual_due.day))

    def calendar(self) -> WorkingCalendar:
        return WorkingCalendar(extra_days_off=frozenset(self.calendar_config.extra_days_off),
                               extra_working_days=frozenset(self.calendar_config.extra_working_days))


def parse_config(raw: Any, registry: Registry, source: str = "reporting.yaml") -> ReportingConfig:
    try:
        data = _File.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{source}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ReportingConfigError("\n".join(problems)) from exc
    problems = []
    kinds = {r.kind for r in data.allowances.rates}
    for s in data.allowances.staff:
        if s.unit not in registry.units:
            problems.append(f"{source}: staff {s.id}: unknown unit {s.unit!r}")
        if s.kind not in kinds:
            problems.append(f"{source}: staff {s.id}: no rate for kind {s.kind!r}")
    if data.leader.unit not in registry.units:
        problems.append(f"{source}: leader: unknown unit {data.leader.unit!r}")
    if problems:
        raise ReportingConfigError("\n".join(problems))
    return ReportingConfig(
        data.issuing_body, data.signer, tuple(_nfc(r) for r in data.recipients), data.leader,
        data.periods, data.calendar, _nfc(data.allowances.basis),
        [Rate(r.kind, r.amount, r.from_) for r in data.allowances.rates],
        [StaffMember(s.id, s.title, s.unit, s.kind, s.from_, s.to) for s in data.allowances.staff])


def load_config(path: Path, registry: Registry) -> ReportingConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReportingConfigError(f"{path}: {exc}") from exc
    return parse_config(raw, registry, str(path))
