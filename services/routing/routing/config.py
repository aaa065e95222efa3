"""Loading `config/routing.yaml` and building the organisation view from the registry.

Every problem is reported with the file, the entry and what is wrong, all at
once, so that an operator fixes the file in one go (`python -m routing check-config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ioc_shared.registry import Registry, UnitKind
from pydantic import ValidationError

from routing.domain.disputes import DISPUTE_CATEGORY
from routing.domain.organisation import ContactInfo, Organisation
from routing.domain.policy import RoutingPolicy, validate_policy


class RoutingConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid routing configuration:\n  " + "\n  ".join(problems))


def organisation_from_registry(registry: Registry) -> Organisation:
    units = registry.units
    district = next((u.id for u in units.values() if u.kind is UnitKind.DISTRICT),
                    registry.centre.unit)
    incident_datasets = [d for d in registry.datasets.values() if d.incident]
    # Routing's own category: data disputes (Đ4.5), whatever the dataset.
    categories: set[str] = {DISPUTE_CATEGORY}
    for ds in incident_datasets:
        schema = ds.schema_for(ds.canonical_version)
        spec = schema.fields.get("category") if schema else None
        if spec is not None:
            categories.update(spec.values)
    communes = registry.communes()
    return Organisation(
        unit_ids=frozenset(units),
        commune_ids=frozenset(u.id for u in communes),
        ioc_unit=registry.centre.unit,
        district_unit=district,
        incident_datasets=frozenset(d.id for d in incident_datasets),
        categories=frozenset(categories),
        commune_centres={u.id: u.centre for u in communes if u.centre is not None},
        contacts={u.id: tuple(ContactInfo(c.role, c.title, c.name) for c in u.contacts)
                  for u in units.values()},
        unit_names={u.id: u.name for u in units.values()},
        incident_units=frozenset(u.id for u in units.values() if u.may_handle_incidents),
    )


def _label(raw: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    """'rules[2] (id=x) field 'when.category'' from a pydantic error location."""
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(raw.get(str(loc[0])), list):
        items, index = raw[str(loc[0])], loc[1]
        entry = items[index] if index < len(items) else None
        ident = entry.get("id") if isinstance(entry, dict) else None
        head = f"{loc[0]}[{index}]" + (f" (id={ident})" if ident else "")
        rest = ".".join(str(p) for p in loc[2:])
        return head + (f" field '{rest}'" if rest else "")
    return ".".join(str(p) for p in loc) or "top level"


def parse_policy(raw: Any, source: str, org: Organisation) -> RoutingPolicy:
    if not isinstance(raw, dict):
        raise RoutingConfigError([f"{source}: top level must be a mapping (rules, default, ...)"])
    try:
        policy = RoutingPolicy.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{source}: {_label(raw, tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise RoutingConfigError(problems) from exc
    problems = [f"{source}: {p}" for p in validate_policy(policy, org)]
    targets = [(f"rules[{i}] (id={r.id})", r.unit) for i, r in enumerate(policy.rules)]
    problems += [f"{source}: {label}: unit '{unit}' does not handle incidents "
                 "(registry: handles_incidents)"
                 for label, unit in [*targets, ("default", policy.default.unit)]
                 if unit in org.unit_ids and not org.handles_incidents(unit)]
    if problems:
        raise RoutingConfigError(problems)
    return policy


def load_policy(path: Path, org: Organisation) -> RoutingPolicy:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutingConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise RoutingConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_policy(raw, str(path), org)
