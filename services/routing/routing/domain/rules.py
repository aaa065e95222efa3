"""First-match routing rules: which unit is responsible for an incident, and why."""

from __future__ import annotations

from dataclasses import dataclass

from routing.domain.geo import Point, nearest_commune
from routing.domain.organisation import Organisation
from routing.domain.policy import (
    TARGET_AREA,
    TARGET_COMMUNE,
    TARGET_OWNER,
    Conditions,
    RoutingPolicy,
)


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What the rules look at; taken from the canonical record."""

    dataset: str
    category: str
    priority: str
    commune: str
    source_unit: str
    location: Point | None = None
    # The unit whose record the incident is about (a data dispute's record owner; else
    # the source unit): the `@owner` target.
    owner_unit: str | None = None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule_id: str                 # "default" when no rule matched
    unit: str
    area: str                    # commune derived from coordinates (or the record's commune)
    explanation: tuple[str, ...]


def derive_area(facts: IncidentFacts, org: Organisation) -> tuple[str, str]:
    """(area commune id, how it was found)."""
    if facts.location is not None and org.commune_centres:
        nearest = nearest_commune(facts.location, org.commune_centres)
        if nearest is not None:
            return nearest[0], (f"area {nearest[0]} from coordinates "
                                f"({nearest[1] / 1000:.1f} km from its centre)")
    return facts.commune, f"area {facts.commune} from the record's commune (no coordinates or centres)"


def _check(conditions: Conditions, facts: IncidentFacts, area: str) -> tuple[bool, list[str]]:
    values = {"category": facts.category, "priority": facts.priority, "commune": facts.commune,
              "area": area, "source_unit": facts.source_unit, "dataset": facts.dataset}
    reasons = []
    for name, value in values.items():
        accepted: tuple[str, ...] = getattr(conditions, name)
        if not accepted:
            continue
        if value not in accepted:
            return False, [f"{name} {value!r} not in {list(accepted)}"]
        reasons.append(f"{name} {value!r} in {list(accepted)}")
    return True, reasons


def resolve_target(target: str, facts: IncidentFacts, area: str) -> str:
    if target == TARGET_COMMUNE:
        return facts.commune
    if target == TARGET_AREA:
        return area
    if target == TARGET_OWNER:
        return facts.owner_unit or facts.source_unit
    return target


def match_rule(policy: RoutingPolicy, org: Organisation, facts: IncidentFacts) -> RuleMatch:
    area, area_note = derive_area(facts, org)
    explanation = [area_note]
    for rule in policy.rules:
        ok, reasons = _check(rule.when, facts, area)
        if ok:
            unit = resolve_target(rule.unit, facts, area)
            explanation.append(f"rule {rule.id} matched: " + ("; ".join(reasons) or "no conditions"))
            explanation.append(f"responsible unit {unit} ({rule.unit})")
            return RuleMatch(rule.id, unit, area, tuple(explanation))
        explanation.append(f"rule {rule.id} skipped: {reasons[0]}")
    unit = resolve_target(policy.default.unit, facts, area)
    explanation.append(f"no rule matched: default rule, responsible unit {unit} ({policy.default.unit})")
    return RuleMatch("default", unit, area, tuple(explanation))
