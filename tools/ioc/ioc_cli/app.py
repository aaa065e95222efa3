"""`ioc`: status, traces, incidents, commands, quarantine, configuration, freshness.

Every command reads the services' own environment (`IOC_*`, then `INGEST_*`,
`ROUTING_*` ...). A broker, database or file that cannot be reached ends the
command with what, where and what to do, and a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import pydantic
import typer
from aiokafka.errors import KafkaError
from ioc_shared.platform.settings import ServiceSettings
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ioc_cli import output, queries, traces
from ioc_cli.environment import (
    OperatorSettings,
    discover_services,
    load_operator_credential,
    up_traces_file,
)
from ioc_cli.errors import OperatorError, _no_password, kafka_unreachable, postgres_unreachable
from ioc_cli.plugins import mount_plugins

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
incidents_app = typer.Typer(add_completion=False, no_args_is_help=True,
                            help="Incidents in routing's schema.")
quarantine_app = typer.Typer(add_completion=False, no_args_is_help=True,
                             help="Inputs ingest quarantined, and their replay.")
app.add_typer(incidents_app, name="incidents")
app.add_typer(quarantine_app, name="quarantine")

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def database(settings: ServiceSettings) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise postgres_unreachable(settings.database_url, exc) from None
    try:
        yield conn
    except asyncpg.UndefinedTableError as exc:
        raise OperatorError(f"a table is missing ({exc})", where=_no_password(settings.database_url),
                            hint="has the service run its migrations (start it once)? "
                                 "is <SERVICE>_DB_SCHEMA right?") from None
    finally:
        await conn.close()


# --- status -------------------------------------------------------------------------
def render_status(report: dict[str, Any]) -> Any:
    from rich.console import Group

    parts: list[Any] = []
    parts.append(output.table("services", ["service", "health", "url", "detail"], [
        (s["name"], s["status"], s["url"],
         s.get("error") or ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in s.get("checks", {}).items()))
        for s in report["services"]]))
    kafka = report["kafka"]
    if kafka["reachable"]:
        parts.append(output.table(f"topics ({kafka['bootstrap']})", ["topic", "partitions", "declared"], [
            (t["name"], t["partitions"] if t["present"] else "MISSING", t["declared_partitions"])
            for t in kafka.get("topics", [])]))
        parts.append(output.table("consumer lag (committed vs end offsets)", ["group", "service", "lag",
                                                                              "partitions"], [
            (g["group"], g["service"], g["lag"], len(g["partitions"])) for g in kafka.get("groups", [])]))
    else:
        parts.append("[bold red]Kafka unreachable[/] " + escape(
            f"at {kafka['bootstrap']}: {kafka.get('error')}\n  what to do: {kafka.get('hint')}"))
    postgres = report["postgres"]
    if postgres["reachable"]:
        parts.append(output.table(f"outbox backlog ({postgres['url']})",
                                  ["service", "schema", "rows", "messages", "oldest"], [
            (o["service"], o["schema"], "no outbox" if o.get("missing") else o["rows"], o["messages"],
             o["oldest"]) for o in postgres.get("outbox", [])]))
    else:
        parts.append("[bold red]PostgreSQL unreachable[/] " + escape(
            f"at {postgres['url']}: {postgres.get('error')}\n  what to do: {postgres.get('hint')}"))
    parts.append("[green]healthy[/]" if report["healthy"] else "[bold red]NOT healthy[/]")
    return Group(*parts)


@app.command()
def status(
    as_json: JsonFlag = False,
    watch: Annotated[float | None, typer.Option("--watch", help="refresh every N seconds")] = None,
    group: Annotated[list[str] | None, typer.Option(help="also show this consumer group's lag")] = None,
) -> None:
    """Health of each service, topics and partitions, consumer lag, outbox backlog."""
    from ioc_cli.status import gather_status

    settings = OperatorSettings()
    services = discover_services(settings)
    if watch:
        with Live(console=output.console, auto_refresh=False) as live:
            while True:
                report = run(gather_status(settings, services, group or ()))
                live.update(render_status(report), refresh=True)
                time.sleep(watch)
    report = run(gather_status(settings, services, group or ()))
    if as_json:
        output.print_json(report)
    else:
        output.console.print(render_status(report))
    if not report["healthy"]:
        raise typer.Exit(1)


# --- traces -------------------------------------------------------------------------
@app.command()
def trace(
    trace_id: Annotated[str, typer.Argument(help="32 hex digits (the trace_id of a log line)")],
    file: Annotated[Path | None, typer.Option(
        "--file", help="default: IOC_TRACES_FILE, else what `make up` writes "
                       "(.run/traces.jsonl)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The span tree of one trace, from the OTLP/JSON lines the services wrote."""
    path = file or OperatorSettings().traces_file or up_traces_file()
    spans = traces.read_spans(path, trace_id)
    if not spans:
        raise OperatorError(f"no span of trace {trace_id}", where=str(path),
                            hint="check the id; spans are written a few seconds after they end")
    roots = traces.build_tree(spans)
    if as_json:
        output.print_json({"trace_id": trace_id, "spans": len(spans),
                           "roots": [r.to_json() for r in roots]})
    else:
        output.console.print(traces.render(trace_id, roots))


# --- incidents ----------------------------------------------------------------------
def _routing_settings() -> Any:
    from routing.settings import RoutingSettings

    return RoutingSettings()


@incidents_app.command("list")
def incidents_list(
    state: Annotated[str | None, typer.Option(help="only this state, e.g. assigned")] = None,
    unit: Annotated[str | None, typer.Option(help="only incidents assigned to this unit")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The most recently changed incidents."""
    rs = _routing_settings()

    async def read() -> list[dict[str, Any]]:
        async with database(rs) as conn:
            return await queries.list_incidents(conn, rs.db_schema, state=state, unit=unit, limit=limit)

    rows = run(read())
    if as_json:
        output.print_json(rows)
        return
    output.console.print(output.table(f"incidents ({rs.db_schema})", [
        "id", "state", "unit", "category/priority", "commune", "updated"], [
        (r["id"], r["state"], r["assigned_unit"], f"{r['category']}/{r['priority']}", r["commune"],
         r["updated_at"]) for r in rows]))


@incidents_app.command("show")
def incidents_show(incident_id: str, as_json: JsonFlag = False) -> None:
    """One incident and its audit trail."""
    from routing.repository import RoutingRepository

    rs = _routing_settings()

    async def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        async with database(rs) as conn:
            found = await queries.incident(conn, rs.db_schema, incident_id)
            history = await RoutingRepository(rs.db_schema).history(conn, incident_id) if found else []
            return found, [dict(h) for h in history]

    found, history = run(read())
    if found is None:
        raise OperatorError(f"no incident {incident_id}", where=f"{rs.db_schema}.incidents",
                            hint="list them with 'ioc incidents list'")
    if as_json:
        output.print_json({"incident": found, "history": history})
        return
    for key, value in found.items():
        output.console.print(f"[bold]{key:>15}[/] " + escape(output.cell(value)))
    output.console.print(output.table("history", ["at", "event", "from", "to", "by", "reason"], [
        (h["occurred_at"], h["event_type"], h["from_state"], h["to_state"],
         f"{h['actor_principal']} ({h['actor_unit']})", h["reason"]) for h in history]))


@incidents_app.command("overdue")
def incidents_overdue(as_json: JsonFlag = False) -> None:
    """Incidents past a deadline they still wait on (routing's own query)."""
    from routing.repository import RoutingRepository

    rs = _routing_settings()

    async def read() -> list[dict[str, Any]]:
        async with database(rs) as conn:
            return [dict(r) for r in await RoutingRepository(rs.db_schema).overdue(conn, datetime.now(UTC))]

    rows = run(read())
    if as_json:
        output.print_json(rows)
        return
    output.console.print(output.table("overdue incidents", [
        "id", "state", "unit", "deadline", "due", "escalation step"], [
        (r["id"], r["state"], r.get("assigned_unit"), r.get("deadline"), r.get("due_at"),
         r.get("escalation_step") or 0) for r in rows]))


# --- commands -----------------------------------------------------------------------
@app.command()
def act(
    verb: Annotated[str, typer.Argument(help="verify, reject, approve, assign, acknowledge, "
                                             "update_status, return, transfer, resolve, close, reopen, "
                                             "merge, answer_survey")],
    incident_id: Annotated[str, typer.Argument()],
    unit: Annotated[str | None, typer.Option(help="assign/transfer: the unit")] = None,
    reason: Annotated[str | None, typer.Option(help="reject/return/transfer/reopen: why")] = None,
    note: Annotated[str | None, typer.Option(help="resolve/update_status: the note")] = None,
    primary: Annotated[str | None, typer.Option(help="merge: the primary incident id")] = None,
    score: Annotated[int | None, typer.Option(help="answer_survey: 1-5")] = None,
    as_principal: Annotated[str | None, typer.Option("--as", help="principal to sign as")] = None,
    credentials: Annotated[Path | None, typer.Option(
        help="default: IOC_OPERATOR_CREDENTIALS or ~/.config/ioc/operator.yaml")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for routing's answer")] = 15.0,
    as_json: JsonFlag = False,
) -> None:
    """Send a signed routing command and print routing's answer (exit 1 when rejected)."""
    from routing.domain.states import Verb

    from ioc_cli.act import command_envelope, send_and_wait, unit_of

    if verb not in {v.value for v in Verb}:
        raise OperatorError(f"unknown verb '{verb}'", hint=f"one of {', '.join(v.value for v in Verb)}")
    settings = OperatorSettings()
    credential = load_operator_credential(credentials or settings.operator_credentials, as_principal)
    fields = {"unit": unit, "reason": reason, "primary_id": primary, "score": score,
              ("resolution_note" if verb == "resolve" else "note"): note}
    envelope = command_envelope(verb, incident_id, unit_of(settings, credential.principal), fields)
    result = run(send_and_wait(settings, envelope, credential, timeout))
    if as_json:
        output.print_json(result)
    else:
        colour = "green" if result.get("status") == "accepted" else "bold red"
        detail = (f", {result.get('reason_code')}: {result.get('message')}"
                  if result.get("reason_code") else "")
        output.console.print(f"[{colour}]{result.get('status')}[/] " + escape(
            f"{verb} {incident_id} as {credential.principal}: state {result.get('state')}{detail}"
            f"  (trace {result['trace_id']})"))
    if result.get("status") != "accepted":
        raise typer.Exit(1)


# --- quarantine ---------------------------------------------------------------------
def _ingest() -> tuple[Any, Any]:
    from ingest.settings import IngestSettings
    from ingest.topics import IngestTopics
    from ioc_shared.registry import RegistryError, load_registry

    settings = IngestSettings()
    try:
        registry = load_registry(settings.registry_file)
    except (RegistryError, OSError) as exc:
        raise OperatorError(f"the registry does not load ({exc})", where=str(settings.registry_file),
                            hint="ioc check-config") from None
    return settings, IngestTopics.resolve(settings, registry)


def _since(text: str | None, default: timedelta) -> datetime:
    if text is None:
        return datetime.now(UTC) - default
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OperatorError(f"--since {text!r} is not an ISO time",
                            hint="e.g. 2026-12-01T08:00 (UTC unless an offset is given)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@quarantine_app.command("list")
def quarantine_list(
    since: Annotated[str | None, typer.Option(help="ISO time (default: 24 hours ago)")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Quarantined inputs: when, unit, dataset, rejection code (the raw value is not shown)."""
    from ioc_cli.quarantine import list_quarantined

    settings, topics = _ingest()
    with Progress(SpinnerColumn(), TextColumn("reading quarantine"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=output.errors,
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("scan", total=None)
        rows = run(list_quarantined(settings.kafka_bootstrap, topics.quarantine,
                                    _since(since, timedelta(days=1)), limit=limit,
                                    progress=lambda done, total: bar.update(task, completed=done,
                                                                            total=total)))
    if as_json:
        output.print_json(rows)
        return
    output.console.print(output.table(f"quarantine ({topics.quarantine})", [
        "at", "unit", "dataset", "code", "origin", "partition/offset"], [
        (r["at"], r.get("unit"), r.get("dataset"), r.get("code"), r.get("origin"),
         f"{r['partition']}/{r['offset']}") for r in rows]))


@quarantine_app.command("replay")
def quarantine_replay(
    since: Annotated[str, typer.Option(help="ISO time: replay copies quarantined from then on")],
    reason: Annotated[list[str] | None, typer.Option(help="rejection code (repeatable)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time: up to then")] = None,
    unit: Annotated[list[str] | None, typer.Option(help="only this unit (repeatable)")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="only this dataset (repeatable)")] = None,
    note: Annotated[str, typer.Option(help="why: kept in the replay header for the audit")] = "",
    limit: Annotated[int | None, typer.Option(help="replay at most this many")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-publish quarantined inputs to the inbound topic after a fix (ingest's replay)."""
    from ingest.domain import Code
    from ingest.replay import ReplayFilter, replay_quarantine

    known = {c.value for c in Code}
    unknown = sorted(set(reason or ()) - known)
    if unknown:
        raise OperatorError(f"unknown rejection code(s) {unknown}", hint=f"known: {sorted(known)}")
    settings, topics = _ingest()
    selection = ReplayFilter(since=_since(since, timedelta()), until=_since(until, timedelta()) if until
                             else None, codes=frozenset(reason or ()), units=frozenset(unit or ()),
                             datasets=frozenset(dataset or ()))
    # ingest's replay reports only when it is done: the bar shows that it runs, not how far.
    with Progress(SpinnerColumn(), TextColumn("replaying from quarantine"), BarColumn(),
                  TimeElapsedColumn(), console=output.errors, transient=True, disable=as_json) as bar:
        bar.add_task("replay", total=None)
        try:
            summary = run(replay_quarantine(settings, topics, selection, note=note, dry_run=dry_run,
                                            limit=limit))
        except (KafkaError, OSError) as exc:
            raise kafka_unreachable(settings.kafka_bootstrap, exc) from None
    if as_json:
        output.print_json(summary.to_json())
    else:
        data = summary.to_json()
        output.console.print(f"replay {data['replay_id']}: scanned {data['scanned']}, matched "
                             f"{data['matched']}, replayed {data['replayed']}"
                             + (" (dry run)" if dry_run else "") + f"; by code {data['by_code']}")


# --- configuration and freshness ----------------------------------------------------
@app.command("check-config")
def check_config(as_json: JsonFlag = False) -> None:
    """The registry and credentials (ingest's checks) and routing's policy against them."""
    from ingest.settings import IngestSettings

    from ioc_cli.checks import check_registry, check_routing_policy

    report = {"registry": check_registry(IngestSettings()),
              "routing_policy": check_routing_policy(_routing_settings())}
    failed = any(part["errors"] for part in report.values())
    if as_json:
        output.print_json({**report, "ok": not failed})
    else:
        for name, part in report.items():
            mark = "[bold red]ERRORS[/]" if part["errors"] else "[green]OK[/]"
            output.console.print(escape(f"{name}: {part['file']} ") + mark)
            for line in part["errors"]:
                output.console.print(f"  ERROR {line}", markup=False)
            for line in part.get("warnings", []):
                output.console.print(f"  WARNING {line}", markup=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def units(
    unit: Annotated[str | None, typer.Option(help="only this unit")] = None,
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Freshness per unit and dataset (ingest's `freshness` table): late ones first."""
    from ingest.settings import IngestSettings

    settings = IngestSettings()

    async def read() -> list[dict[str, Any]]:
        async with database(settings) as conn:
            return await queries.freshness(conn, settings.db_schema, unit=unit, dataset=dataset)

    rows = run(read())
    now = datetime.now(UTC)
    for r in rows:
        r["status"] = "late" if r["late_since"] is not None else "fresh"
        r["silent_s"] = queries.age_seconds(r["last_accepted_at"], now)
    if as_json:
        output.print_json(rows)
        return
    output.console.print(output.table(f"freshness ({settings.db_schema})", [
        "unit", "dataset", "status", "last accepted", "late since", "checked"], [
        (r["unit"], r["dataset"], r["status"], r["last_accepted_at"], r["late_since"], r["checked_at"])
        for r in rows]))


mount_plugins(app)


def main() -> None:
    """The console script: operator errors become a message and an exit code."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its retries would repeat our message
    try:
        code = app(standalone_mode=False)  # click returns Exit codes here instead of raising
    except OperatorError as exc:
        output.errors.print(exc.render(), markup=False)
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        output.errors.print("aborted", markup=False)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except pydantic.ValidationError as exc:  # settings refused (e.g. credentials, dev mode)
        reasons = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        todo = ("set the district Kafka security settings named above" if "Kafka" in reasons
                else "point IOC_CREDENTIALS_FILE at the credentials file outside the "
                "repository")
        output.errors.print(f"error: settings refused: {reasons}\n  what to do: {todo}, or "
                            "set IOC_DEV_MODE=1 on a development machine", markup=False)
        raise SystemExit(4) from None
    except (asyncpg.PostgresError, KafkaError, OSError) as exc:  # what no command foresaw
        output.errors.print(f"error: {type(exc).__name__}: {exc}\n  what to do: check the "
                            "service's settings (IOC_*) and 'ioc status'", markup=False)
        raise SystemExit(3) from None
    except typer.TyperException as exc:  # usage errors: a bad option, a missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            output.errors.print(f"error: {exc}", markup=False)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
