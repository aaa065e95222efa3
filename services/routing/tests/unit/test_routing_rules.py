"""First-match routing rules, the default rule, areas from coordinates, and config validation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from routing.config import RoutingConfigError, load_policy, organisation_from_registry, parse_policy
from routing.domain.geo import Point
from routing.domain.rules import IncidentFacts, match_rule
from routing_examples import ORG, POLICY, POLICY_RAW


def facts(**kw: Any) -> IncidentFacts:
    base: dict[str, Any] = {"dataset": "field-reports", "category": "moi-truong",
                            "priority": "binh-thuong", "commune": "xa-a", "source_unit": "xa-c",
                            "location": None}
    return IncidentFacts(**{**base, **kw})


@pytest.mark.parametrize(("given", "rule", "unit"), [
    ({"category": "an-ninh"}, "police", "police"),
    ({"priority": "khan-cap"}, "env-serious", "env-dept"),
    # Commune says xa-a, but the coordinates are by the centre of xa-b: the area rule wins.
    ({"location": Point(11.899, 106.601)}, "env-north", "xa-b"),
    ({"dataset": "alerts", "source_unit": "police", "category": "giao-thong"},
     "alerts-from-police", "police"),
    ({"commune": "xa-c"}, "env-local", "xa-c"),
    ({"location": Point(11.801, 106.60)}, "env-local", "xa-a"),
    ({"category": "giao-thong"}, "default", "env-dept"),
    ({"commune": "xa-b"}, "default", "env-dept"),  # no coordinates: area = commune xa-b ...
])
def test_first_matching_rule_decides(given: dict[str, Any], rule: str, unit: str) -> None:
    if given == {"commune": "xa-b"}:
        # ... which env-north matches by area: the record's commune stands in for the area.
        match = match_rule(POLICY, ORG, facts(**given))
        assert (match.rule_id, match.unit) == ("env-north", "xa-b")
        return
    match = match_rule(POLICY, ORG, facts(**given))
    assert (match.rule_id, match.unit) == (rule, unit)


def test_explanation_says_why_each_rule_was_skipped_or_taken() -> None:
    match = match_rule(POLICY, ORG, facts(category="giao-thong"))
    text = "\n".join(match.explanation)
    assert "rule police skipped: category 'giao-thong' not in ['an-ninh']" in text
    assert "no rule matched: default rule, responsible unit env-dept" in text
    near = match_rule(POLICY, ORG, facts(location=Point(11.899, 106.601)))
    assert near.area == "xa-b" and "from coordinates" in near.explanation[0]


def test_seed_configuration_is_valid_against_the_seed_registry() -> None:
    registry = load_registry(REPO_ROOT / "config" / "registry.yaml")
    org = organisation_from_registry(registry)
    policy = load_policy(REPO_ROOT / "config" / "routing.yaml", org)
    match = match_rule(policy, org, IncidentFacts("phan-anh-hien-truong", "moi-truong",
                                                  "binh-thuong", "xa-loc-an", "xa-loc-an"))
    assert match.unit == "xa-loc-an"
    auto = policy.automation_for("phan-anh-hien-truong", "moi-truong", "binh-thuong")
    assert auto is not None and auto.assign


def broken(edit: Any) -> list[str]:
    raw = copy.deepcopy(POLICY_RAW)
    edit(raw)
    with pytest.raises(RoutingConfigError) as err:
        parse_policy(raw, "routing.yaml", ORG)
    return err.value.problems


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda r: r["rules"][0].update(unit="nobody"),
     "routing.yaml: rules[0] (id=police): unit 'nobody' is not a unit of the registry"),
    (lambda r: r["rules"][1]["when"].update(category=["bogus"]),
     "routing.yaml: rules[1] (id=env-serious): unknown category ['bogus']"),
    (lambda r: r["rules"][1]["when"].update(priority=["urgent"]),
     "routing.yaml: rules[1] (id=env-serious): unknown priority ['urgent']"),
    (lambda r: r["rules"][4]["when"].update(commune=["xa-z"]),
     "routing.yaml: rules[4] (id=env-local): unknown commune ['xa-z']"),
    (lambda r: r["rules"][1].update(id="police"),
     "routing.yaml: rules[1] (id=police): duplicate rule id"),
    (lambda r: r["rules"][0]["when"].update(colour=["red"]),
     "routing.yaml: rules[0] (id=police) field 'when.colour': Extra inputs are not permitted"),
    (lambda r: r.pop("default"), "routing.yaml: default: Field required"),
    (lambda r: r["deadlines"].pop(),
     "routing.yaml: deadlines[0]: the last entry must match every incident"),
    (lambda r: r["deadlines"][1].update(acknowledge={"hours": 1, "minutes": 5}),
     "routing.yaml: deadlines[1] field 'acknowledge': Value error, give exactly one of"),
    (lambda r: r["escalation"]["chain"][2].update(recipients=["@nobody"]),
     "routing.yaml: escalation[0].chain[2] (level=ioc-leader): unknown recipient '@nobody'"),
    (lambda r: r["automation"][0].update(verify=False),
     "routing.yaml: automation[0] (id=env-auto): Value error, approve: true needs verify: true"),
    (lambda r: r.update(calendar={"office_hours": {"periods": ["07:30-12:00", "11:00-17:00"]}}),
     "routing.yaml: calendar: office periods overlap"),
])
def test_invalid_configuration_names_file_entry_and_problem(edit: Any, problem: str) -> None:
    problems = broken(edit)
    assert any(p.startswith(problem) for p in problems), problems


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    bad.write_text("rules: [unclosed", encoding="utf-8")
    with pytest.raises(RoutingConfigError, match="not valid YAML"):
        load_policy(bad, ORG)


@pytest.mark.parametrize("org_has_centres", [True, False])
def test_planner_matches_as_match_rule_does_once_per_distinct_facts(org_has_centres: bool) -> None:
    import dataclasses
    from datetime import UTC, datetime

    from routing.domain.deadlines import Planner

    org = ORG if org_has_centres else dataclasses.replace(ORG, commune_centres={})
    planner = Planner(POLICY, POLICY.calendar.build(), datetime(2026, 11, 27, 2, tzinfo=UTC))
    cases = [facts(), facts(location=Point(11.899, 106.601)), facts(location=Point(11.70, 106.5)),
             facts(category="an-ninh"), facts()]
    for f in cases:
        assert planner.match(org, f) == match_rule(POLICY, org, f)
    assert planner.match(org, cases[1]) is planner.match(org, cases[1])
    # Without commune centres coordinates cannot change the outcome: one entry for both.
    assert len(planner._matches) == (4 if org_has_centres else 2)
