"""The one entry point: `python -m reporting serve | check-config | request | list | sample | parked`
(also `ioc reports ...`)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.parking import parked_cli
from ioc_shared.platform.wiring import stop_on_signals
from ioc_shared.registry import RegistryError, load_registry

from reporting.bootstrap import MIGRATIONS, run_reporting, topics_of
from reporting.commands import CommandHandler
from reporting.config import ReportingConfigError, load_config
from reporting.domain.lifecycle import Command, Rejection, Verb
from reporting.reports import ReportService
from reporting.repository import ReportingRepository
from reporting.settings import ReportingSettings

cli = typer.Typer(add_completion=False, help="IOC reporting: rollups and reports in Vietnamese.")
cli.add_typer(parked_cli(ReportingSettings, lambda s: s.db_schema), name="parked")


@cli.command()
def serve() -> None:
    """Run the reporting service until SIGINT/SIGTERM."""
    settings = ReportingSettings()
    # Batches of thousands of records make many young objects: start-up objects are kept
    # out of the collector's scans and it runs less often (docs/perf/reporting.md).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

    async def main() -> None:
        await run_reporting(settings, stop_on_signals())

    asyncio.run(main())


@cli.command("check-config")
def check_config() -> None:
    """Validate config/reporting.yaml against the registry; exit 1 with every problem."""
    settings = ReportingSettings()
    try:
        config = load_config(settings.reporting_config, load_registry(settings.registry_file,
                                                                      settings.credentials_file))
    except (RegistryError, ReportingConfigError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{settings.reporting_config}: OK — cut-off {config.periods.cut_off}, "
               f"{len(config.recipients)} recipients, {len(config.staff)} staff, "
               f"{len(config.rates)} allowance rates")


@cli.command()
def request(
    period: Annotated[str, typer.Option(help="2026-11, 2026-Q4, 2026-H1, 2026 or 2026-11-01..2026-11-20")],
    kind: Annotated[str, typer.Option(help="thematic or ad-hoc")] = "thematic",
    domain: Annotated[str | None, typer.Option()] = None,
    commune: Annotated[str | None, typer.Option()] = None,
    unit: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    principal: Annotated[str, typer.Option(help="acting principal (operator on duty)")] = "ioc-operator",
) -> None:
    """Generate a thematic or ad-hoc report now (published through the service's outbox).

    Prints the new version (JSON) or the rejection with its reason; exit 1 when rejected.
    """
    import uuid

    settings = ReportingSettings()
    registry = load_registry(settings.registry_file, settings.credentials_file)
    config = load_config(settings.reporting_config, registry)
    if principal not in registry.principals:
        typer.echo(f"unknown principal {principal}", err=True)
        raise typer.Exit(1)
    roles = frozenset(registry.principals[principal].roles)
    cmd = Command(Verb.REQUEST, uuid.uuid4(), None, period, kind, domain, commune, unit, category)

    async def main() -> object:
        pool = await create_pool(settings.database_url, max_size=2)
        try:
            await migrate(pool, settings.db_schema, MIGRATIONS)
            service = ReportService(pool, ReportingRepository(settings.db_schema), registry, config,
                                    config.calendar(), topics_of(settings), settings.output_dir,
                                    render_files=settings.render_files)
            handler = CommandHandler(service)
            async with pool.acquire() as conn, service.transaction(conn):
                return await handler.decide(conn, cmd, principal, roles)
        finally:
            await pool.close()

    result = asyncio.run(main())
    if isinstance(result, Rejection):
        typer.echo(f"rejected ({result.reason.value}): {result.message}", err=True)
        raise typer.Exit(1)
    assert isinstance(result, dict)
    json.dump({k: str(v) for k, v in result.items() if k in (
        "report_id", "period_key", "version", "status", "files")}, sys.stdout, ensure_ascii=False,
        indent=2)
    typer.echo()


@cli.command("list")
def list_reports(limit: Annotated[int, typer.Option()] = 50,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Report versions, newest first: period, version, status, number, files."""
    settings = ReportingSettings()

    async def main() -> list[dict[str, object]]:
        pool = await create_pool(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await ReportingRepository(settings.db_schema).list_reports(conn, limit)
        finally:
            await pool.close()

    try:
        rows = asyncio.run(main())
    except asyncpg.UndefinedTableError as exc:
        typer.echo(f"no reports: schema {settings.db_schema} has no reporting tables (the service "
                   "creates them when it starts)", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        json.dump(rows, sys.stdout, default=str, ensure_ascii=False, indent=2)
        typer.echo()
        return
    if not rows:
        typer.echo("no report yet")
    for r in rows:
        typer.echo(f"{r['report_id']}  {r['period_key']:<24} v{r['version']:<3} {r['status']:<9} "
                   f"{r['number'] or '-':<12} {r['files'].get('pdf', '-')}")  # type: ignore[attr-defined]


@cli.command()
def sample(out: Annotated[Path, typer.Option(help="folder for the sample files")] = Path("sample"),
           incidents: Annotated[int, typer.Option()] = 400) -> None:
    """Render a sample monthly report from synthetic events (no database): PDF, PNG of
    page 1, DOCX, XLSX and JSON in `out`."""
    from reporting.sample_report import write_sample

    for path in write_sample(out, incidents):
        typer.echo(path)


if __name__ == "__main__":  # pragma: no cover
    cli()
