"""The one entry point: `python -m sync_province serve | status | pause | resume | resend |
reconcile | parked | verify-log`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.contracts.topics import SYNC_PROVINCE_STATUS, canonical_topic
from ioc_shared.platform.db import create_pool, migrate
from ioc_shared.platform.kafka import (
    declare_topics,
    envelope_headers,
    make_admin,
    use_district_security,
)
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.observability import ReadinessCheck
from ioc_shared.platform.runtime import ServiceRuntime
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_province.domain import LOCAL_TZ, Stream, day_bounds_ms
from sync_province.grants_watch import RegistryWatcher
from sync_province.http_target import HttpTarget
from sync_province.kafka_target import KafkaTarget
from sync_province.pipeline import Pipeline
from sync_province.repository import Repository
from sync_province.settings import SyncSettings
from sync_province.sharelog import checkpoint_now, load_or_create_key, public_hex, verify_log
from sync_province.status import DRIFT_TYPE, StatusReporter
from sync_province.targets import Target

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = get_logger("sync-province")
cli = typer.Typer(add_completion=False, help="sync-province: mirror shared data to the provincial IOC.")


def build_streams(settings: SyncSettings, watcher: RegistryWatcher) -> list[Stream]:
    streams = []
    for dataset in watcher.shared_datasets():
        spec = canonical_topic(dataset)
        streams.append(Stream(dataset, settings.topic(spec).name, spec.name, dataset))
    for topic in settings.event_topic_names():
        name = f"{settings.topic_namespace}.{topic}" if settings.topic_namespace else topic
        streams.append(Stream(topic, name, topic, None))
    return streams


async def _existing(bootstrap: str, streams: list[Stream]) -> tuple[list[Stream], dict[str, int]]:
    admin = make_admin(bootstrap, client_id="sync-province-topics")
    await admin.start()
    try:
        names = set(await admin.list_topics())
        present = [s for s in streams if s.source_topic in names]
        described = await admin.describe_topics([s.source_topic for s in present]) if present else []
        return present, {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def build_targets(settings: SyncSettings, partitions: dict[str, int]) -> list[Target]:
    targets: list[Target] = []
    for kind in settings.target_kinds():
        if kind == "kafka":
            targets.append(KafkaTarget(settings.province_kafka_bootstrap,
                                       settings.province_security(), settings.topic_prefix(),
                                       partitions, settings.topic_replication))
        elif kind == "http":
            cert = (settings.gateway_client_cert_file, settings.gateway_client_key_file)
            targets.append(HttpTarget(
                settings.gateway_url, settings.district, token=settings.gateway_token_value(),
                ca_file=settings.gateway_ca_file,
                client_cert=cert if cert[0] and cert[1] else None,  # type: ignore[arg-type]
                timeout_s=settings.gateway_timeout_s))
        else:
            raise typer.BadParameter(f"unknown target kind {kind!r} (kafka, http)")
    return targets


async def discover_streams(settings: SyncSettings, watcher: RegistryWatcher
                           ) -> tuple[list[Stream], dict[str, int]]:
    """The streams the registry shares now whose source topic exists, with partition counts."""
    wanted = build_streams(settings, watcher)
    # Canonical topics are ingest's; declaring them (idempotent) lets this start first.
    await declare_topics(settings.kafka_bootstrap,
                         [settings.topic(canonical_topic(s.dataset)) for s in wanted if s.dataset],
                         replication=settings.topic_replication)
    streams, partitions = await _existing(settings.kafka_bootstrap, wanted)
    for s in set(wanted) - set(streams):
        log.warning("event topic absent: not forwarded until it exists and the registry is"
                    " reloaded (or the service restarts)", topic=s.source_topic)
    return streams, partitions


async def run_service(settings: SyncSettings) -> None:
    use_district_security(settings.kafka_security())   # before the first client (below)
    status_topic = settings.topic(SYNC_PROVINCE_STATUS)
    watcher = RegistryWatcher(settings.registry_file, settings.credentials_file,
                              settings.province_principal)
    streams, partitions = await discover_streams(settings, watcher)
    runtime = ServiceRuntime("sync-province", settings, schema=settings.schema_name,
                             migrations=MIGRATIONS, topics=[status_topic])
    targets = build_targets(settings, partitions)
    pipelines: list[Pipeline] = []
    reporter_box: list[StatusReporter] = []

    async def status_route(_: Request) -> JSONResponse:
        return JSONResponse(reporter_box[0].snapshot() if reporter_box else [])

    runtime._http_routes = [Route("/status", status_route)]
    async with runtime as rt:
        assert rt.pool is not None
        repo = Repository(rt.pool, settings.schema_name)
        await repo.prepare()
        for target in targets:
            for name, check in _link_checks(target, reporter_box,
                                            settings.unreachable_after_s).items():
                rt.add_check(name, check)
        await rt.start_broker()

        async def publish(envelope: Envelope) -> None:
            await rt.broker.publish(envelope.to_bytes(), status_topic.name, key=envelope.key,
                                    headers=envelope_headers(envelope, {H_PRODUCER: "sync-province"}))

        for target in targets:
            pipeline = Pipeline(
                target, streams, partitions, district_bootstrap=settings.kafka_bootstrap,
                district=settings.district, repo=repo, grants=watcher,
                require_producer="ingest" if settings.require_producer_header else None,
                forwarded_types=settings.event_type_names(), batch_records=settings.batch_records,
                retry_max_wait_s=settings.retry_max_wait_s,
                registry_check_s=settings.registry_check_s,
                discover=lambda: discover_streams(settings, watcher))

            async def drift(result: dict[str, Any]) -> None:
                await publish(Envelope(type=DRIFT_TYPE, source_unit=settings.district,
                                       subject=result["stream"], payload=result))

            pipeline.drift_sink = drift
            pipelines.append(pipeline)
        reporter = StatusReporter(pipelines, district_bootstrap=settings.kafka_bootstrap,
                                  district=settings.district, metrics=rt.metrics, publish=publish,
                                  unreachable_after_s=settings.unreachable_after_s,
                                  retention_margin_s=settings.retention_margin_s)
        reporter_box.append(reporter)
        key = load_or_create_key(settings.signing_key_file)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, watcher.force)
        for pipeline in pipelines:
            # Restarted with backoff if the district broker or PostgreSQL fails under it;
            # the province being away never raises (the pipeline waits for it).
            rt.supervise(f"pipeline {pipeline.target.name}", pipeline.run)
        rt.spawn(_every(settings.status_interval_s, reporter.report, "status"))
        rt.spawn(_every(settings.retention_check_s, reporter.refresh_retention, "retention",
                        first_delay=0.0))
        rt.spawn(_every(settings.checkpoint_interval_s,
                        lambda: checkpoint_now(repo, key, settings.district, targets), "checkpoint"))
        rt.spawn(_every(settings.reconcile_interval_s,
                        lambda: _ask_reconcile(repo, pipelines, settings.reconcile_days),
                        "reconcile"))
        await rt.wait_for_shutdown()


def _link_checks(target: Target, reporter_box: list[StatusReporter], unreachable_after_s: float
                 ) -> dict[str, ReadinessCheck]:
    """Readiness of a link, from memory: the target answers, no retention risk."""
    def reachable() -> tuple[bool, str | None]:
        away = target.health.unreachable_for()
        return away < unreachable_after_s, (f"province {target.name} unreachable for {away:.0f} s:"
                                            f" {target.health.last_error}")

    def retention_safe() -> tuple[bool, str | None]:
        if not reporter_box:
            return True, None
        reporter_box[0].snapshot()      # judged now, not at the last status event
        risky = sorted(s for t, s in reporter_box[0].at_risk if t == target.name)
        return not risky, f"oldest unsynced record near the retention of {risky}"

    return {f"province-{target.name}": reachable, f"retention-{target.name}": retention_safe}


async def _every(interval: float, work: Any, what: str, first_delay: float | None = None) -> None:
    await asyncio.sleep(interval if first_delay is None else first_delay)
    while True:
        try:
            await work()
        except Exception as exc:   # periodic chores never take the link down
            log.warning("periodic work failed", what=what, error=repr(exc))
        await asyncio.sleep(interval)


async def _ask_reconcile(repo: Repository, pipelines: list[Pipeline], days: int) -> None:
    today = datetime.now(UTC).astimezone(LOCAL_TZ).date()
    for p in pipelines:
        for s in p.streams:
            for back in range(days):
                start, end = day_bounds_ms(today - timedelta(days=back))
                await repo.request("reconcile", p.target.name, s.name, start, end)


# --- commands ------------------------------------------------------------------------

@cli.command()
def serve() -> None:
    """Run the link until SIGINT/SIGTERM (SIGHUP reloads the registry)."""
    asyncio.run(run_service(SyncSettings()))


async def _repo(settings: SyncSettings) -> Repository:
    pool = await create_pool(settings.database_url, max_size=2)
    await migrate(pool, settings.schema_name, MIGRATIONS)
    repo = Repository(pool, settings.schema_name)
    await repo.prepare()
    return repo


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


TARGET_KINDS = ("kafka", "http")


@cli.command()
def status(service_url: Annotated[str | None, typer.Option(
        help="the running service, for live lag (default: SYNC_PROVINCE_HTTP_PORT on loopback)"
        )] = None) -> None:
    """Per target (kafka, http): positions, parked batches, last shipment, live lag; the
    switches and the share log's head. JSON."""
    settings = SyncSettings()
    url = service_url or (f"http://127.0.0.1:{settings.http_port}" if settings.http_port else None)

    async def main() -> dict[str, Any]:
        repo = await _repo(settings)
        live = await _live_rows(url)
        try:
            parked = await repo.parked()
            targets = {}
            for target in TARGET_KINDS:
                # http: the cursor itself; kafka: the copy kept here (its cursor topic rules).
                positions = await repo.cursor.load(repo.pool, target)
                mine = None if live is None else [row for row in live
                                                  if row.get("target") == target]
                # The running service knows its targets; this shell's settings only guess them
                # (`make up` sets SYNC_PROVINCE_TARGETS for the service, not for the operator).
                targets[target] = {
                    "configured": target in settings.target_kinds() if mine is None else bool(mine),
                    "running": None if mine is None else bool(mine),
                    "positions": {f"{stream}:{p}": o for (stream, p), o in sorted(positions.items())},
                    "parked": sum(1 for row in parked if row["target"] == target),
                    "last_shipment": await repo.last_shipment(target),
                    "live": None if mine is None else [
                        {k: row.get(k) for k in ("stream", "lag_records", "lag_seconds", "sent",
                                                 "paused", "unreachable_s", "last_error")}
                        for row in mine]}
            seq, head = await repo.head()
            return {"targets": targets, "paused": sorted(map(list, await repo.paused())),
                    "share_log_head": {"seq": seq, "hash": head},
                    "last_checkpoint_seq": await repo.last_checkpoint_seq()}
        finally:
            await repo.pool.close()
    typer.echo(json.dumps(_run(main()), indent=2, default=str, ensure_ascii=False))


async def _live_rows(url: str | None) -> list[dict[str, Any]] | None:
    """The running service's status rows, or None when it does not answer."""
    if url is None:
        return None
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            return list((await http.get(f"{url.rstrip('/')}/status")).json())
    except (httpx.HTTPError, ValueError):
        return None


def _switch(target: str, stream: str, paused: bool) -> None:
    async def main() -> None:
        repo = await _repo(SyncSettings())
        try:
            await repo.set_paused(target, stream, paused)
        finally:
            await repo.pool.close()
    _run(main())
    typer.echo(f"{'paused' if paused else 'resumed'}: target={target} stream={stream}")


@cli.command()
def pause(target: Annotated[str, typer.Option(help="kafka, http or *")] = "*",
          stream: Annotated[str, typer.Option(help="dataset id, event topic or *")] = "*") -> None:
    """Stop sending a stream (or everything) to a target; the backlog stays in Kafka."""
    _switch(target, stream, True)


@cli.command()
def resume(target: Annotated[str, typer.Option()] = "*",
           stream: Annotated[str, typer.Option()] = "*") -> None:
    """Undo `pause`."""
    _switch(target, stream, False)


def _parse_time(value: str) -> int:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=LOCAL_TZ)
    return int(parsed.timestamp() * 1000)


def _request(kind: str, target: str, stream: str, from_ms: int, to_ms: int, wait: float) -> None:
    async def main() -> dict[str, Any] | None:
        repo = await _repo(SyncSettings())
        try:
            request_id = await repo.request(kind, target, stream, from_ms, to_ms)
            deadline = asyncio.get_running_loop().time() + wait
            while asyncio.get_running_loop().time() < deadline:
                result = await repo.request_result(request_id)
                if result is not None:
                    return result
                await asyncio.sleep(0.3)
            return {"request_id": request_id, "status": "queued"}
        finally:
            await repo.pool.close()
    typer.echo(json.dumps(_run(main()), ensure_ascii=False))


@cli.command()
def resend(target: Annotated[str, typer.Option(help="kafka or http")],
           stream: Annotated[str, typer.Option(help="dataset id or event topic")],
           from_: Annotated[str, typer.Option("--from", help="ISO time (local if no offset)")],
           to: Annotated[str, typer.Option(help="ISO time, exclusive")],
           wait: Annotated[float, typer.Option(help="seconds to wait for the result")] = 60.0) -> None:
    """Send a time range of a stream again (records already synced; grants in force now)."""
    _request("resend", target, stream, _parse_time(from_), _parse_time(to), wait)


@cli.command()
def reconcile(target: Annotated[str, typer.Option()], stream: Annotated[str, typer.Option()],
              day: Annotated[str, typer.Option(help="local day YYYY-MM-DD")],
              wait: Annotated[float, typer.Option()] = 60.0) -> None:
    """Compare a day's count and checksum with the province; re-send what it lacks."""
    start, end = day_bounds_ms(date.fromisoformat(day))
    _request("reconcile", target, stream, start, end, wait)


@cli.command()
def parked(target: Annotated[str | None, typer.Option()] = None) -> None:
    """Batches the province refused, with its answer."""
    async def main() -> list[dict[str, Any]]:
        repo = await _repo(SyncSettings())
        try:
            return await repo.parked(target)
        finally:
            await repo.pool.close()
    typer.echo(orjson.dumps(_run(main()), default=str, option=orjson.OPT_INDENT_2).decode())


@cli.command("verify-log")
def verify_log_command(
        public_key: Annotated[str | None, typer.Option(help="trusted Ed25519 key, hex (default: the"
                                                         " signing key's)")] = None) -> None:
    """Check the share log's hash chain and its signed checkpoints; exit 1 on any problem."""
    settings = SyncSettings()
    trusted = public_key or public_hex(load_or_create_key(settings.signing_key_file))

    async def main() -> tuple[int, list[Any], int]:
        repo = await _repo(settings)
        try:
            problems = await verify_log(repo, settings.district, trusted)
            return len(await repo.entries()), problems, len(await repo.checkpoints())
        finally:
            await repo.pool.close()
    entries, problems, checkpoints = _run(main())
    for p in problems:
        typer.echo(f"entry {p.seq}: {p.problem}", err=True)
    if problems:
        typer.echo(f"share log: {len(problems)} problem(s) in {entries} entries", err=True)
        sys.exit(1)
    typer.echo(f"share log: {entries} entries and {checkpoints} checkpoints verify")
