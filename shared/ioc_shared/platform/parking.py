"""Parked records and outbox messages: the SQL, and the operator's `parked` commands.

`DurableConsumer` parks a record it gave up on (see `ioc_shared.platform.consumer`).
An operator lists them and, once the cause is fixed, replays them: the raw key, value
and headers go back to their topic with a header `ioc-replay-of:
<consumer>/<topic>:<partition>:<offset>`. Consumers are idempotent by event id, so a
replay of a record that was handled meanwhile changes nothing.

A service mounts the commands in its `main.py`:

    cli.add_typer(parked_cli(RoutingSettings, lambda s: s.db_schema), name="parked")

    python -m routing parked list [--consumer C] [--json]
    python -m routing parked replay --id 3 --id 4 | --consumer C | --all

The outbox relay parks messages too large for the broker in `outbox_parked` (see
`ioc_shared.platform.outbox`). Once the broker takes them (its `max.message.bytes`, or the
topic's, raised), an operator re-publishes them, or drops them with a reason:

    python -m routing parked outbox list [--all] [--json]
    python -m routing parked outbox replay --id EVENT_ID ... | --all [--max-message-bytes N]
    python -m routing parked outbox drop --id EVENT_ID ... --reason TEXT
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import asyncpg
import orjson
import typer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ioc_shared.platform.db import create_pool
from ioc_shared.platform.kafka import make_producer
from ioc_shared.platform.settings import ServiceSettings

if TYPE_CHECKING:
    from ioc_shared.platform.consumer import Delivery

H_REPLAY_OF = "ioc-replay-of"
_ERROR_CHARS = 2000

S = TypeVar("S", bound=ServiceSettings)


def _text_or_b64(field: str, raw: bytes) -> dict[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:  # jsonb holds no NUL
        return {f"{field}_b64": base64.b64encode(raw).decode()}
    return {field: text}


def headers_to_json(headers: Sequence[tuple[str, bytes]]) -> str:
    """Headers as a JSON array that keeps their order, duplicates and exact bytes."""
    return json.dumps([{**_text_or_b64("name", k.encode("utf-8", "surrogateescape")),
                        **_text_or_b64("value", v)} for k, v in headers])


def headers_from_json(stored: str | list[dict[str, str]]) -> list[tuple[str, bytes]]:
    items = json.loads(stored) if isinstance(stored, str) else stored
    out = []
    for item in items:
        name = (item["name"] if "name" in item
                else base64.b64decode(item["name_b64"]).decode("utf-8", "surrogateescape"))
        value = (item["value"].encode() if "value" in item
                 else base64.b64decode(item["value_b64"]))
        out.append((name, value))
    return out


def _error_text(error: BaseException) -> str:
    """Class and message, storable as text whatever the message holds (NUL, surrogates)."""
    text = f"{type(error).__name__}: {error}"[:_ERROR_CHARS]
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


async def park(pool: asyncpg.Pool, schema: str, consumer: str, delivery: Delivery,
               error: BaseException, attempts: int) -> None:
    """Keep `delivery` for an operator; a record parked before is left as it was."""
    await pool.execute(
        f"INSERT INTO {schema}.consumer_parked (consumer, topic, partition, \"offset\", key, "
        "value, headers, error, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) "
        "ON CONFLICT (consumer, topic, partition, \"offset\") DO NOTHING",
        consumer, delivery.topic, delivery.partition, delivery.offset, delivery.key,
        delivery.value, headers_to_json(delivery.headers), _error_text(error), attempts)


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """What an operator sees of a parked record (not its payload: it may hold personal data)."""

    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    error: str
    attempts: int
    size: int
    parked_at: datetime
    replayed_at: datetime | None


async def list_parked(pool: asyncpg.Pool, schema: str, consumer: str | None = None,
                      limit: int = 100, *, include_replayed: bool = False) -> list[ParkedRecord]:
    """Parked records, oldest first; those replayed already only with `include_replayed`."""
    rows = await pool.fetch(
        f"SELECT id, consumer, topic, partition, \"offset\", error, attempts, "
        f"octet_length(value) AS size, parked_at, replayed_at FROM {schema}.consumer_parked "
        "WHERE ($1::text IS NULL OR consumer = $1) AND ($2 OR replayed_at IS NULL) "
        "ORDER BY id LIMIT $3", consumer, include_replayed, limit)
    return [ParkedRecord(**dict(r)) for r in rows]


async def replay_parked(pool: asyncpg.Pool, schema: str, producer: AIOKafkaProducer, *,
                        ids: Sequence[int] = (), consumer: str | None = None,
                        all: bool = False) -> list[int]:
    """Re-publish parked records to their topics and mark them replayed; returns their ids.

    Exactly one of: `ids` (replayed again even if they were before), `consumer` (its
    records not replayed yet), `all` (every record not replayed yet).
    """
    if sum((bool(ids), consumer is not None, all)) != 1:
        raise ValueError("replay takes exactly one of ids, consumer or all")
    rows = await pool.fetch(
        f"SELECT id, consumer, topic, partition, \"offset\", key, value, headers "
        f"FROM {schema}.consumer_parked WHERE "
        + ("id = ANY($1::bigint[])" if ids else
           "($1::text IS NULL OR consumer = $1) AND replayed_at IS NULL")
        + " ORDER BY id", list(ids) if ids else consumer)
    sent = []
    for r in rows:
        origin = f"{r['consumer']}/{r['topic']}:{r['partition']}:{r['offset']}"
        headers = [h for h in headers_from_json(r["headers"]) if h[0] != H_REPLAY_OF]
        headers.append((H_REPLAY_OF, origin.encode()))
        sent.append(await producer.send(r["topic"], r["value"], key=r["key"], headers=headers))
    await asyncio.gather(*sent)
    replayed = [r["id"] for r in rows]
    if replayed:
        await pool.execute(f"UPDATE {schema}.consumer_parked SET replayed_at = now() "
                           "WHERE id = ANY($1::bigint[])", replayed)
    return replayed


@dataclass(frozen=True, slots=True)
class ParkedOutboxMessage:
    """What an operator sees of a parked outbox message (not its payload)."""

    event_id: str
    topic: str
    size: int
    parked_at: datetime
    republished_at: datetime | None
    dropped_at: datetime | None
    drop_reason: str | None


@dataclass(frozen=True, slots=True)
class Republished:
    """The outcome of `republish_outbox_parked`, by event id."""

    sent: list[str]
    too_large: list[str]          # still over the limit, or refused by the broker: kept
    # Unknown, re-published or dropped before, or being sent by another run: left alone.
    not_waiting: list[str]


async def list_outbox_parked(pool: asyncpg.Pool, schema: str, limit: int = 100, *,
                             include_done: bool = False) -> list[ParkedOutboxMessage]:
    """Parked outbox messages, oldest first; re-published or dropped ones only with
    `include_done`."""
    rows = await pool.fetch(
        f"SELECT event_id, topic, size, parked_at, republished_at, dropped_at, drop_reason "
        f"FROM {schema}.outbox_parked WHERE $1 OR (republished_at IS NULL AND dropped_at IS NULL) "
        "ORDER BY parked_at, row_id, event_id LIMIT $2", include_done, limit)
    return [ParkedOutboxMessage(**dict(r)) for r in rows]


def _outbox_selection(ids: Sequence[str], all: bool) -> tuple[str, list[str] | None]:
    if bool(ids) == all:
        raise ValueError("give exactly one of ids or all")
    return ("event_id = ANY($1::text[])" if ids else "$1::text[] IS NULL"), (list(ids) or None)


async def republish_outbox_parked(pool: asyncpg.Pool, schema: str, producer: AIOKafkaProducer,
                                  *, ids: Sequence[str] = (), all: bool = False,
                                  max_message_bytes: int = 1_000_000) -> Republished:
    """Publish parked outbox messages (`ids`, or `all` waiting) to their topics as the relay
    would have (same key, value and headers) and mark them `republished_at`.

    Only waiting messages are sent: a second run sends nothing again. Rows are locked
    while they are sent, so two operators do not both send one. A message over
    `max_message_bytes` (the limit the broker now has), or refused by the broker as too
    large, stays parked. Sent one at a time, each acknowledged before the next; on another
    Kafka error the ones sent are marked, then the error is raised. Use
    `republish_producer`: an idempotent producer fails every later send to a partition
    once the broker refused one of its batches (out-of-order sequence).
    """
    condition, arg = _outbox_selection(ids, all)
    sent: list[str] = []
    too_large: list[str] = []
    failed: KafkaError | None = None
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT event_id, topic, key, headers, payload FROM {schema}.outbox_parked "
            f"WHERE {condition} AND republished_at IS NULL AND dropped_at IS NULL "
            "ORDER BY parked_at, row_id, event_id FOR UPDATE SKIP LOCKED", arg)
        for r in rows:
            stored = _json_object(r["headers"])
            # Measured as the relay measures it (it parked the message by this size).
            if len(r["payload"]) + len(r["key"] or b"") + len(orjson.dumps(stored)) \
                    > max_message_bytes:
                too_large.append(r["event_id"])
                continue
            headers = [(k, str(v).encode()) for k, v in stored.items()]
            try:
                await producer.send_and_wait(r["topic"], r["payload"], key=r["key"],
                                             headers=headers)
            except MessageSizeTooLargeError:   # by the producer's or the broker's limit
                too_large.append(r["event_id"])
                continue
            except KafkaError as exc:
                failed = exc
                break
            sent.append(r["event_id"])
        if sent:
            await conn.execute(f"UPDATE {schema}.outbox_parked SET republished_at = now() "
                               "WHERE event_id = ANY($1::text[])", sent)
    if failed is not None:
        raise failed
    handled = {r["event_id"] for r in rows}
    return Republished(sent, too_large, [i for i in ids if i not in handled])


def republish_producer(bootstrap: str, *, client_id: str,
                       max_message_bytes: int) -> AIOKafkaProducer:
    """A producer for `republish_outbox_parked`: acks=all, not idempotent (see there),
    requests large enough for `max_message_bytes`."""
    return make_producer(bootstrap, client_id=client_id, enable_idempotence=False,
                         max_request_size=max_message_bytes + 64 * 1024)


async def drop_outbox_parked(pool: asyncpg.Pool, schema: str, ids: Sequence[str],
                             reason: str) -> list[str]:
    """Give up on waiting parked outbox messages, recording why; returns the ids dropped."""
    if not reason.strip():
        raise ValueError("a drop needs a reason")
    rows = await pool.fetch(
        f"UPDATE {schema}.outbox_parked SET dropped_at = now(), drop_reason = $2 "
        "WHERE event_id = ANY($1::text[]) AND republished_at IS NULL AND dropped_at IS NULL "
        "RETURNING event_id", list(ids), reason)
    return sorted(r["event_id"] for r in rows)


def _json_object(stored: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(stored) if isinstance(stored, str) else stored


def parked_cli(settings: Callable[[], S], schema_of: Callable[[S], str]) -> typer.Typer:
    """The `parked list | replay` and `parked outbox list | replay | drop` commands for a
    service whose settings `settings()` builds."""
    app = typer.Typer(no_args_is_help=True,
                      help="Records a consumer gave up on: list them, replay them. "
                      "`outbox`: messages the outbox relay parked as too large.")

    async def with_pool(work: Callable[[S, asyncpg.Pool], Any]) -> Any:
        s = settings()
        pool = await create_pool(s.database_url, max_size=1)
        try:
            return await work(s, pool)
        finally:
            await pool.close()

    @app.command("list")
    def list_command(
        consumer: Annotated[str | None, typer.Option(help="only this consumer")] = None,
        limit: Annotated[int, typer.Option()] = 100,
        replayed: Annotated[bool, typer.Option("--replayed", help="also replayed ones")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Parked records, oldest first (position and error, never the payload)."""
        async def work(s: S, pool: asyncpg.Pool) -> list[ParkedRecord]:
            return await list_parked(pool, schema_of(s), consumer, limit,
                                     include_replayed=replayed)

        found: list[ParkedRecord] = asyncio.run(with_pool(work))
        if as_json:
            json.dump([asdict(p) for p in found], sys.stdout, default=str, indent=2)
            typer.echo()
            return
        if not found:
            typer.echo("no parked record")
        for p in found:
            state = f"replayed {p.replayed_at:%Y-%m-%d %H:%M}Z" if p.replayed_at else "waiting"
            typer.echo(f"{p.id}  {p.consumer}  {p.topic}:{p.partition}:{p.offset}  {p.size} B  "
                       f"{p.attempts} attempts  parked {p.parked_at:%Y-%m-%d %H:%M}Z  {state}  "
                       f"{p.error}")

    @app.command("replay")
    def replay_command(
        id: Annotated[list[int] | None, typer.Option("--id", help="a parked record's id")] = None,
        consumer: Annotated[str | None, typer.Option(help="every waiting record of it")] = None,
        all_: Annotated[bool, typer.Option("--all", help="every waiting record")] = False,
    ) -> None:
        """Re-publish parked records to their topics (after the cause is fixed)."""
        if sum((bool(id), consumer is not None, all_)) != 1:
            typer.echo("give one of --id N (repeatable), --consumer NAME or --all", err=True)
            raise typer.Exit(2)

        async def work(s: S, pool: asyncpg.Pool) -> list[int]:
            producer = make_producer(s.kafka_bootstrap, client_id=f"{s.service_name}-replay")
            await producer.start()
            try:
                return await replay_parked(pool, schema_of(s), producer, ids=id or (),
                                           consumer=consumer, all=all_)
            finally:
                await producer.stop()

        replayed: list[int] = asyncio.run(with_pool(work))
        typer.echo(f"replayed {len(replayed)} record(s)" +
                   (f": {', '.join(map(str, replayed))}" if replayed else ""))

    app.add_typer(_outbox_cli(settings, schema_of, with_pool), name="outbox")
    return app


def _outbox_cli(settings: Callable[[], S], schema_of: Callable[[S], str],
                with_pool: Callable[[Callable[[S, asyncpg.Pool], Any]], Any]) -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, help="Outbox messages the relay parked as too "
                      "large for the broker: list, re-publish (replay) or drop them.")

    @app.command("list")
    def list_command(
        limit: Annotated[int, typer.Option()] = 100,
        done: Annotated[bool, typer.Option("--all", help="also re-published and dropped")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Parked outbox messages, oldest first (event id, topic and size, never the payload)."""
        async def work(s: S, pool: asyncpg.Pool) -> list[ParkedOutboxMessage]:
            return await list_outbox_parked(pool, schema_of(s), limit, include_done=done)

        found: list[ParkedOutboxMessage] = asyncio.run(with_pool(work))
        if as_json:
            json.dump([asdict(p) for p in found], sys.stdout, default=str, indent=2)
            typer.echo()
            return
        if not found:
            typer.echo("no parked outbox message")
        for p in found:
            state = (f"republished {p.republished_at:%Y-%m-%d %H:%M}Z" if p.republished_at
                     else f"dropped {p.dropped_at:%Y-%m-%d %H:%M}Z: {p.drop_reason}"
                     if p.dropped_at else "waiting")
            typer.echo(f"{p.event_id}  {p.topic}  {p.size} B  "
                       f"parked {p.parked_at:%Y-%m-%d %H:%M}Z  {state}")

    @app.command("replay")
    def replay_command(
        id: Annotated[list[str] | None, typer.Option("--id", help="a message's event id")] = None,
        all_: Annotated[bool, typer.Option("--all", help="every waiting message")] = False,
        max_message_bytes: Annotated[int, typer.Option(
            help="the largest message the broker now takes (key + value + headers)")
        ] = 1_000_000,
    ) -> None:
        """Re-publish parked outbox messages to their topics, once they fit."""
        if bool(id) == all_:
            typer.echo("give --id EVENT_ID (repeatable) or --all", err=True)
            raise typer.Exit(2)

        async def work(s: S, pool: asyncpg.Pool) -> Republished:
            producer = republish_producer(s.kafka_bootstrap,
                                          client_id=f"{s.service_name}-republish",
                                          max_message_bytes=max_message_bytes)
            await producer.start()
            try:
                return await republish_outbox_parked(pool, schema_of(s), producer, ids=id or (),
                                                     all=all_,
                                                     max_message_bytes=max_message_bytes)
            finally:
                await producer.stop()

        done: Republished = asyncio.run(with_pool(work))
        typer.echo(f"re-published {len(done.sent)} message(s)"
                   + (f": {', '.join(done.sent)}" if done.sent else ""))
        if done.too_large:
            typer.echo(f"still too large, kept: {', '.join(done.too_large)}", err=True)
        if done.not_waiting:
            typer.echo(f"not waiting (unknown, re-published or dropped): "
                       f"{', '.join(done.not_waiting)}", err=True)
        if done.too_large:
            raise typer.Exit(1)

    @app.command("drop")
    def drop_command(
        id: Annotated[list[str], typer.Option("--id", help="a message's event id")],
        reason: Annotated[str, typer.Option(help="why it is given up (recorded)")],
    ) -> None:
        """Give up on parked outbox messages, recording why (the row stays, as the record)."""
        if not reason.strip():
            typer.echo("--reason must say why", err=True)
            raise typer.Exit(2)

        async def work(s: S, pool: asyncpg.Pool) -> list[str]:
            return await drop_outbox_parked(pool, schema_of(s), id, reason)

        dropped: list[str] = asyncio.run(with_pool(work))
        typer.echo(f"dropped {len(dropped)} message(s)"
                   + (f": {', '.join(dropped)}" if dropped else ""))

    return app
