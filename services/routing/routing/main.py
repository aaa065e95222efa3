"""The one entry point: `python -m routing serve | dry-run | check-config | overdue`."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from ioc_shared.platform.db import create_pool
from ioc_shared.platform.parking import parked_cli
from ioc_shared.platform.wiring import stop_on_signals
from ioc_shared.registry import RegistryError, load_registry

from routing.bootstrap import run_routing
from routing.config import RoutingConfigError, load_policy, organisation_from_registry
from routing.domain.deadlines import build_snapshot, schedule
from routing.domain.geo import Point
from routing.domain.rules import IncidentFacts, match_rule
from routing.repository import RoutingRepository
from routing.settings import RoutingSettings

cli = typer.Typer(add_completion=False, help="IOC routing: dispatch incidents and follow them up.")
cli.add_typer(parked_cli(RoutingSettings, lambda s: s.db_schema), name="parked")


def _load(settings: RoutingSettings):  # type: ignore[no-untyped-def]
    try:
        registry = load_registry(settings.registry_file, settings.credentials_file)
        org = organisation_from_registry(registry)
        return registry, org, load_policy(settings.routing_config, org)
    except (RegistryError, RoutingConfigError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@cli.command()
def serve() -> None:
    """Run the routing service until SIGINT/SIGTERM."""
    settings = RoutingSettings()

    async def main() -> None:
        await run_routing(settings, stop_on_signals(), gc_tuning=True)

    asyncio.run(main())


@cli.command()
def relay() -> None:
    """Run only the outbox relay (started by `serve` as a child process)."""
    from routing.relay import run_relay_process

    asyncio.run(run_relay_process(RoutingSettings()))


@cli.command("check-config")
def check_config() -> None:
    """Validate config/routing.yaml against the registry; exit 1 with every problem.

    Then list the coming twelve months' days off and worked days that break the weekly
    pattern, to compare with the government's decision on days off."""
    settings = RoutingSettings()
    _, org, policy = _load(settings)
    steps = sum(len(e.chain) for e in policy.escalation)
    typer.echo(f"{settings.routing_config}: OK — {len(policy.rules)} rules + default, "
               f"{len(policy.deadlines)} deadline entries, {len(policy.escalation)} escalation "
               f"entries ({steps} steps), {len(policy.ioc_deadlines)} IOC deadline entries, "
               f"{len(policy.automation)} automation entries; "
               f"incident datasets: {', '.join(sorted(org.incident_datasets))}")
    calendar = policy.calendar.build()
    today = datetime.now(calendar.tz).date()
    until = today.replace(year=today.year + 1) if (today.month, today.day) != (2, 29) \
        else today + timedelta(days=365)
    typer.echo(f"Working calendar {today} to {until - timedelta(days=1)} ({calendar.timezone}): "
               "holidays and days off, and days worked outside office weekdays. Compare with the "
               "year's decision on days off; enter differences under calendar.extra_days_off "
               "and calendar.compensatory_working_days.")
    for day, worked, why in calendar.days_off_and_worked_days(today, until):
        typer.echo(f"  {day:%a %Y-%m-%d}  {'WORKED' if worked else 'off   '}  {why}")


@cli.command("dry-run")
def dry_run(
    category: Annotated[str, typer.Option(help="category of the incident")],
    commune: Annotated[str, typer.Option(help="commune id of the record")],
    priority: Annotated[str, typer.Option()] = "binh-thuong",
    dataset: Annotated[str, typer.Option()] = "phan-anh-hien-truong",
    source_unit: Annotated[str, typer.Option()] = "ioc-loc-ninh",
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    at: Annotated[str | None, typer.Option(help="assignment time, ISO 8601 (default: now)")] = None,
) -> None:
    """Show which rule an incident would hit and why, its deadlines and escalation schedule."""
    settings = RoutingSettings()
    _, org, policy = _load(settings)
    location = Point(lat, lon) if lat is not None and lon is not None else None
    facts = IncidentFacts(dataset, category, priority, commune, source_unit, location)
    match = match_rule(policy, org, facts)
    typer.echo(f"rule: {match.rule_id} -> unit {match.unit} ({org.name_of(match.unit)})")
    for line in match.explanation:
        typer.echo(f"  - {line}")
    auto = policy.automation_for(dataset, category, priority)
    typer.echo(f"automation: {auto.id if auto else 'none (verification and approval by people)'}")
    when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    calendar = policy.calendar.build()
    snapshot = build_snapshot(policy, calendar, category=category, priority=priority, match=match,
                              unit=match.unit, assigned_at=when, automation=auto,
                              manual_unit=False)
    typer.echo(f"deadlines (entry {snapshot['deadline_entry']}), assigned {when.isoformat()}:")
    typer.echo(f"  acknowledge by {_local(snapshot['acknowledge_due_at'], calendar.tz)}")
    typer.echo(f"  resolve by     {_local(snapshot['resolve_due_at'], calendar.tz)}")
    typer.echo("schedule:")
    for work in schedule(snapshot, calendar):
        typer.echo(f"  {work.due_at.astimezone(calendar.tz):%a %Y-%m-%d %H:%M} {work.kind} "
                   f"{work.deadline} step {work.step}")


def _local(iso: str, tz: object) -> str:
    return f"{datetime.fromisoformat(iso).astimezone(tz):%a %Y-%m-%d %H:%M %Z}"  # type: ignore[arg-type]


@cli.command()
def overdue(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Incidents past a deadline they still wait on (they stay listed until handled)."""
    settings = RoutingSettings()

    async def main() -> list[dict[str, object]]:
        pool = await create_pool(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                rows = await RoutingRepository(settings.db_schema).overdue(conn, datetime.now(UTC))
        finally:
            await pool.close()
        return [dict(r) for r in rows]

    rows = asyncio.run(main())
    if as_json:
        json.dump(rows, sys.stdout, default=_iso, ensure_ascii=False, indent=2)
        typer.echo()
        return
    if not rows:
        typer.echo("no overdue incident")
        return
    for r in rows:
        typer.echo(f"{r['id']}  {r['state']:<13} {r['assigned_unit'] or '-':<22} {r['deadline']:<11} "
                   f"due {_iso(r['due_at'])}  escalation step {r['escalation_step']}  "
                   f"{r['category']}/{r['priority']}  {r['commune']}")


def _iso(value: object) -> str:
    """ISO 8601 with `T`, as in every event (UTC as the database returns it)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


if __name__ == "__main__":  # pragma: no cover
    cli()
