"""Dataset schemas compiled once into per-field normalizers, and version upgrades.

Compiling at start-up keeps per-record work to one dict lookup and one call
per field (the hot path validates thousands of records a second).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ioc_shared.registry import Dataset, FieldSpec, Registry, SchemaVersion

from ingest.domain import normalize as n
from ingest.domain.codes import Code
from ingest.domain.model import Problem

# Payload keys that claim an identity. Identity comes from credentials only
# (Đ4.1), so these are dropped rather than trusted or rejected.
IDENTITY_FIELDS = frozenset({"unit", "unit_id", "source_unit", "source", "principal", "publisher",
                             "owner", "sender"})
# Datetime fields that name a deadline or a plan may lie in the future.
_FUTURE_ALLOWED_HINTS = ("due", "deadline", "expire", "plan", "schedule", "until")
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_NAME_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Plausibility rules for values, from settings."""

    future_tolerance: timedelta = timedelta(minutes=5)
    absurd_after: timedelta = timedelta(days=3650)
    geo_margin_deg: float = 0.05      # ~5.5 km around the district's bounding box


@dataclass(slots=True)
class Checked:
    """Normalized record values and the problems found; `moments` feed the time checks."""

    record: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    occurred_at: datetime | None = None


Normalizer = Callable[[Any], Any]


class _NameResolver:
    """Registry lookups memoized: commune and unit names repeat across records."""

    def __init__(self, resolve: Callable[[str], str | None]) -> None:
        self._resolve = resolve
        self._cache: dict[str, str | None] = {}

    def __call__(self, name: str) -> str | None:
        try:
            return self._cache[name]
        except KeyError:
            found = self._resolve(name)
            if len(self._cache) < _NAME_CACHE_LIMIT:
                self._cache[name] = found
            return found


@dataclass(frozen=True, slots=True)
class CompiledField:
    name: str
    spec: FieldSpec
    normalize: Normalizer
    is_time: bool = False
    past_only: bool = False


class CompiledSchema:
    def __init__(self, dataset: Dataset, version: SchemaVersion,
                 fields: dict[str, CompiledField], limits: Limits) -> None:
        self.dataset = dataset
        self.version = version
        self.fields = fields
        self.required = tuple(f for f in fields.values() if f.spec.required)
        self._required_names = frozenset(f.name for f in self.required)
        self._limits = limits
        # What `check` needs per field, as plain tuples (no attribute lookups per value):
        # the normalizer, and 0 (plain), 1 (date/datetime) or 2 (datetime in the past only).
        self._steps: dict[str, tuple[Normalizer, int]] = {
            name: (f.normalize, (2 if f.past_only else 1) if f.is_time else 0)
            for name, f in fields.items()}
        self._bounds: tuple[datetime, datetime, datetime] | None = None

    def check(self, raw: dict[str, Any], now: datetime) -> Checked:
        record: dict[str, Any] = {}
        problems: list[Problem] = []
        occurred_at: datetime | None = None
        steps = self._steps
        for name, value in raw.items():
            step = steps.get(name)
            if step is None:
                if name not in IDENTITY_FIELDS:
                    problems.append(Problem(Code.UNKNOWN_FIELD, name,
                                            "một trong: " + ", ".join(self.fields)))
                continue
            if value.__class__ is str:
                if not value or value.isspace():
                    continue
            elif value is None:
                continue
            normalize, time_kind = step
            try:
                normalized = normalize(value)
            except n.FieldProblem as problem:
                problems.append(Problem(problem.code, name, problem.expected))
                continue
            if time_kind:
                problem_code = self._implausible(normalized, now, time_kind == 2)
                if problem_code is not None:
                    problems.append(Problem(problem_code, name,
                                            self._time_expected(problem_code, now)))
                    continue
                if normalized.__class__ is datetime:
                    if occurred_at is None:
                        occurred_at = normalized
                    normalized = n.iso_utc(normalized)
                else:
                    normalized = normalized.isoformat()
            record[name] = normalized
        if not self._required_names <= record.keys():
            for spec in self.required:
                if spec.name not in record and not any(p.field == spec.name for p in problems):
                    problems.append(Problem(Code.MISSING, spec.name, _describe(spec.spec)))
        return Checked(record, problems, occurred_at)

    def conform(self, record: dict[str, Any]) -> list[Problem]:
        """Problems of an upgraded record: its values are already normalized, only its shape is checked."""
        problems = [Problem(Code.UNKNOWN_FIELD, name, "một trong: " + ", ".join(self.fields))
                    for name in record if name not in self.fields]
        problems += [Problem(Code.MISSING, f.name, _describe(f.spec)) for f in self.required
                     if record.get(f.name) is None]
        return problems

    def _implausible(self, moment: datetime | date, now: datetime, past_only: bool) -> Code | None:
        bounds = self._bounds
        if bounds is None or bounds[0] is not now:
            # A batch shares one `now`: its bounds are computed once.
            bounds = self._bounds = (now, now + self._limits.absurd_after,
                                     now + self._limits.future_tolerance)
        if isinstance(moment, datetime):
            if moment < _EARLIEST or moment > bounds[1]:
                return Code.ABSURD_TIMESTAMP
            if past_only and moment > bounds[2]:
                return Code.FUTURE_TIMESTAMP
            return None
        if moment.year < _EARLIEST.year or moment > bounds[1].date():
            return Code.ABSURD_TIMESTAMP
        return None

    @staticmethod
    def _time_expected(code: Code, now: datetime) -> str:
        if code is Code.FUTURE_TIMESTAMP:
            return f"thời điểm đã xảy ra, không muộn hơn {n.iso_utc(now)}"
        return "thời điểm hợp lý (sau năm 1990, không quá 10 năm tới)"


def _describe(spec: FieldSpec) -> str:
    if spec.type == "enum":
        return "một trong: " + ", ".join(spec.values)
    return {"string": "chuỗi ký tự", "text": "văn bản", "integer": "số nguyên", "decimal": "số",
            "boolean": "đúng/sai", "date": "ngày", "datetime": "thời gian", "phone": "số điện thoại",
            "email": "thư điện tử", "commune": "tên hoặc mã xã, thị trấn",
            "unit": "tên hoặc mã đơn vị", "geo": "tọa độ {lat, lon}"}[spec.type]


class SchemaCatalog:
    """Compiled normalizers for every dataset and schema version of a registry."""

    def __init__(self, registry: Registry, limits: Limits | None = None) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self.local: tzinfo = ZoneInfo(registry.centre.timezone)
        self._communes = _NameResolver(registry.resolve_commune)
        self._units = _NameResolver(registry.resolve_unit)
        self._schemas: dict[tuple[str, int], CompiledSchema] = {}
        self._paths: dict[tuple[str, int], tuple[SchemaVersion, ...] | None] = {}
        for ds in registry.datasets.values():
            for version in ds.schemas:
                self._schemas[(ds.id, version.version)] = self._compile(ds, version)
                self._paths[(ds.id, version.version)] = _upgrade_path(ds, version.version)

    def schema(self, dataset: str, version: int) -> CompiledSchema | None:
        return self._schemas.get((dataset, version))

    def upgrade_path(self, dataset: str, version: int) -> tuple[SchemaVersion, ...] | None:
        """Schema versions to apply in order to reach the canonical one; None if there is no path."""
        return self._paths.get((dataset, version))

    def problems(self) -> list[str]:
        """Configuration mistakes a registry check can find: missing upgrade paths, bad defaults."""
        found: list[str] = []
        for (ds_id, version), path in self._paths.items():
            if path is None:
                found.append(f"dataset {ds_id} v{version}: no upgrade path to the canonical version")
        for ds in self.registry.datasets.values():
            for step in ds.schemas:
                target = self._schemas[(ds.id, step.version)]
                label = f"dataset {ds.id} v{step.version}"
                for new in step.rename.values():
                    if new not in target.fields:
                        found.append(f"{label}: rename target '{new}' is not a field")
                for name, value in step.defaults.items():
                    spec = target.fields.get(name)
                    if spec is None:
                        found.append(f"{label}: default for unknown field '{name}'")
                        continue
                    try:
                        spec.normalize(value)
                    except n.FieldProblem as exc:
                        found.append(f"{label}: default {name}={value!r} is invalid ({exc.code.value}: "
                                     f"{exc.expected})")
        return found

    def _compile(self, ds: Dataset, version: SchemaVersion) -> CompiledSchema:
        fields = {name: self._field(name, spec) for name, spec in version.fields.items()}
        return CompiledSchema(ds, version, fields, self.limits)

    def _field(self, name: str, spec: FieldSpec) -> CompiledField:
        lim = spec.max_length
        kind = spec.type
        normalize: Normalizer
        if kind in ("string", "text"):
            normalize = n.text_normalizer(single_line=kind == "string", max_length=lim)
        elif kind in ("integer", "decimal"):
            parse = n.as_integer if kind == "integer" else n.as_decimal
            low, high = spec.min, spec.max

            def normalize(v: Any) -> Any:
                number = parse(v)
                n.check_range(number, low, high)
                return number
        elif kind == "boolean":
            normalize = n.as_boolean
        elif kind == "date":
            normalize = n.as_date
        elif kind == "datetime":
            local = self.local

            def normalize(v: Any) -> Any:
                return n.as_datetime(v, local)
        elif kind == "enum":
            normalize = _enum_normalizer(spec.values)
        elif kind == "phone":
            normalize = _memoized(n.as_phone)
        elif kind == "email":
            normalize = n.as_email
        elif kind in ("commune", "unit"):
            normalize = self._name_normalizer(kind)
        elif kind == "geo":
            bbox, margin = self.registry.centre.bbox, self.limits.geo_margin_deg

            def normalize(v: Any) -> Any:
                if v.__class__ is dict and len(v) == 2:
                    # Fast path for the usual {"lat": float, "lon": float}; anything else
                    # (and any out-of-range value, NaN included) takes the general one.
                    lat, lon = v.get("lat"), v.get("lon")
                    if lat.__class__ is float and lon.__class__ is float \
                            and -90 <= lat <= 90 and -180 <= lon <= 180:
                        n.check_in_area(lat, lon, bbox, margin)
                        return {"lat": lat, "lon": lon}
                lat, lon = n.as_geo(v)
                n.check_in_area(lat, lon, bbox, margin)
                return {"lat": lat, "lon": lon}
        else:  # pragma: no cover - FieldSpec.type is a closed Literal
            raise ValueError(f"unsupported field type {kind}")
        is_time = kind in ("date", "datetime")
        past_only = kind == "datetime" and not any(h in name for h in _FUTURE_ALLOWED_HINTS)
        return CompiledField(name, spec, normalize, is_time, past_only)

    def _name_normalizer(self, kind: str) -> Normalizer:
        resolve = self._communes if kind == "commune" else self._units
        code = Code.UNKNOWN_COMMUNE if kind == "commune" else Code.UNKNOWN_UNIT
        expected = ("tên xã, thị trấn có dấu (Lộc Thành, Lộc Thạnh ...) hoặc mã (xa-loc-an)"
                    if kind == "commune" else "tên, tên gọi khác hoặc mã đơn vị trong danh mục")

        seen: dict[str, str] = {}   # raw spellings already resolved (names repeat)

        def normalize(v: Any) -> Any:
            found = seen.get(v) if v.__class__ is str else None
            if found is not None:
                return found
            if not isinstance(v, str):
                raise n.FieldProblem(Code.WRONG_TYPE, expected)
            found = resolve(n.clean_text(v, single_line=True))
            if found is None:
                raise n.FieldProblem(code, expected)
            if len(seen) < _NAME_CACHE_LIMIT:
                seen[v] = found
            return found

        return normalize


def _enum_normalizer(values: tuple[str, ...]) -> Normalizer:
    by_key = {n.enum_key(v): v for v in values}
    expected = "một trong: " + ", ".join(values)
    seen: dict[str, str] = {v: v for v in values}   # exact canonical spellings: no folding needed

    def normalize(v: Any) -> Any:
        if not isinstance(v, str):
            raise n.FieldProblem(Code.WRONG_TYPE, expected)
        found = seen.get(v)
        if found is None:
            found = by_key.get(n.enum_key(v))
            if found is None:
                raise n.FieldProblem(Code.NOT_IN_ENUM, expected)
            if len(seen) < _NAME_CACHE_LIMIT:
                seen[v] = found
        return found

    return normalize


def _memoized(normalize: Normalizer) -> Normalizer:
    """Cache string inputs of an expensive normalizer (phone parsing costs ~50 µs).

    Bounded, and emptied when full, so it never grows with the data; the values
    stay in this process's memory only, like the records being processed.
    """
    cache: dict[str, Any] = {}

    def cached(v: Any) -> Any:
        if not isinstance(v, str):
            return normalize(v)
        try:
            return cache[v]
        except KeyError:
            pass
        result = normalize(v)   # a FieldProblem propagates and is not cached
        if len(cache) >= _NAME_CACHE_LIMIT:
            cache.clear()
        cache[v] = result
        return result

    return cached


def _upgrade_path(ds: Dataset, version: int) -> tuple[SchemaVersion, ...] | None:
    """Walk back from the canonical version through `upgrade_from` links to `version`."""
    steps: list[SchemaVersion] = []
    current = ds.schema_for(ds.canonical_version)
    seen: set[int] = set()
    while current is not None and current.version != version:
        if current.version in seen or current.upgrade_from is None:
            return None
        seen.add(current.version)
        steps.append(current)
        current = ds.schema_for(current.upgrade_from)
    if current is None:
        return None
    return tuple(reversed(steps))


def upgrade(record: dict[str, Any], steps: tuple[SchemaVersion, ...]) -> dict[str, Any]:
    """Apply each step's rename, drop and defaults (in that order) to a normalized record."""
    out = dict(record)
    for step in steps:
        for old, new in step.rename.items():
            if old in out:
                out[new] = out.pop(old)
        for name in step.drop:
            out.pop(name, None)
        for name, value in step.defaults.items():
            if out.get(name) is None:
                out[name] = value
    return out


def build_catalog(registry: Registry, future_tolerance_s: float,
                  geo_margin_deg: float) -> SchemaCatalog:
    """The registry's compiled schemas, with the plausibility limits from settings."""
    limits = Limits(future_tolerance=timedelta(seconds=future_tolerance_s),
                    geo_margin_deg=geo_margin_deg)
    return SchemaCatalog(registry, limits)
