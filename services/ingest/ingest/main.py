"""The one entry point: `python -m ingest [serve | replay | parked | check-registry | contract]`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from ioc_shared.platform.logging import configure_logging
from ioc_shared.platform.parking import parked_cli
from ioc_shared.registry import RegistryError, load_registry
from pydantic import ValidationError

from ingest.contract import submission_json_schema
from ingest.domain import Code, build_catalog
from ingest.replay import ReplayFilter, replay_quarantine
from ingest.service import run_ingest
from ingest.settings import IngestSettings
from ingest.topics import IngestTopics

app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="IOC ingest: validate, normalize and publish what unit systems send.")
app.add_typer(parked_cli(IngestSettings, lambda s: s.db_schema), name="parked")


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        serve()


@app.command()
def serve() -> None:
    """Run the service until SIGINT/SIGTERM."""
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run_ingest(settings, stop, gc_tuning=True)

    asyncio.run(main())


def _settings() -> IngestSettings:
    """Settings from the environment; a refusal (e.g. development credentials outside
    IOC_DEV_MODE) is one clear line and exit status 2, not a traceback."""
    try:
        return IngestSettings()
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"ingest: refusing to start: {error['msg'].removeprefix('Value error, ')}",
                       err=True)
        raise typer.Exit(2) from None


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def replay(
    since: Annotated[str, typer.Option(help="ISO time: replay copies quarantined from then on")],
    reason: Annotated[list[str] | None, typer.Option(
        help="rejection code to replay (repeatable), e.g. not_permitted; default: all")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time: up to then")] = None,
    unit: Annotated[list[str] | None, typer.Option(help="only this unit id (repeatable)")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="only this dataset (repeatable)")] = None,
    note: Annotated[str, typer.Option(help="why: kept in the replay header for the audit")] = "",
    limit: Annotated[int | None, typer.Option(help="replay at most this many")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be replayed")] = False,
) -> None:
    """Re-publish quarantined inputs to the inbound topic after a fix."""
    known = {c.value for c in Code}
    unknown = [r for r in reason or [] if r not in known]
    if unknown:
        typer.echo(f"unknown rejection code(s) {unknown}; known: {sorted(known)}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    configure_logging("ingest-replay", settings.log_level)
    registry = load_registry(settings.registry_file, settings.credentials_file)
    topics = IngestTopics.resolve(settings, registry)
    selection = ReplayFilter(since=_when(since), until=_when(until) if until else None,
                             codes=frozenset(reason or ()), units=frozenset(unit or ()),
                             datasets=frozenset(dataset or ()))
    summary = asyncio.run(replay_quarantine(settings, topics, selection, note=note,
                                            dry_run=dry_run, limit=limit))
    typer.echo(json.dumps(summary.to_json(), ensure_ascii=False))


@app.command("check-registry")
def check_registry(
    registry_file: Annotated[Path | None, typer.Option("--registry")] = None,
    credentials_file: Annotated[Path | None, typer.Option("--credentials")] = None,
) -> None:
    """Validate the registry and credentials and compile every dataset schema."""
    settings = _settings()
    path = registry_file or settings.registry_file
    creds = credentials_file or settings.credentials_file
    try:
        registry = load_registry(path, creds)
        catalog = build_catalog(registry, settings.future_tolerance_s, settings.geo_margin_deg)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    problems = catalog.problems()
    warnings = []
    now = datetime.now(UTC)
    for p in registry.principals.values():
        if registry.secret_of(p.id) is None:
            warnings.append(f"principal '{p.id}' has no secret in {creds}")
        if not registry.has_token(p.id):
            warnings.append(f"principal '{p.id}' has no HTTP bearer token in {creds}")
    personal = [ds for ds in registry.datasets if registry.personal_fields(ds)]
    if personal and registry.pseudonym_key is None:
        problems.append(f"{creds}: no pseudonym_key, needed for the personal fields of "
                        + ", ".join(personal))
    for g in registry.special_grants():
        if g.expires_at is not None and g.expires_at <= now:
            warnings.append(f"special-request grant '{g.id}' expired at {g.expires_at.isoformat()}")
    for line in problems:
        typer.echo(f"ERROR {line}", err=True)
    for line in warnings:
        typer.echo(f"WARNING {line}", err=True)
    typer.echo(json.dumps({"registry": str(path), "units": len(registry.units),
                           "datasets": len(registry.datasets), "grants": len(registry.grants),
                           "errors": len(problems), "warnings": len(warnings)}, ensure_ascii=False))
    if problems:
        raise typer.Exit(1)


@app.command()
def contract() -> None:
    """Print the JSON Schema of an inbound submission."""
    sys.stdout.write(json.dumps(submission_json_schema(), indent=2, ensure_ascii=False) + "\n")


def cli() -> None:
    app()


if __name__ == "__main__":
    cli()
