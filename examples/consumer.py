"""A downstream team's consumer of an IOC topic: aiokafka, the published JSON Schema, SQLite.

    python examples/consumer.py --topic ioc.data.phan-anh-hien-truong.v1 \
        --schema docs/contracts/released/ioc.data.phan-anh-hien-truong/ingest.record.accepted.json \
        --group phong-tn-mt-dashboard --bootstrap 127.0.0.1:19092 --state consumer-state.sqlite

What it shows (docs/consumers.md explains each):
- its own consumer group, no auto-commit: offsets are committed only after the batch's
  effects are stored;
- `isolation_level="read_committed"`: never sees messages of aborted transactions;
- idempotency by event id: the effect and the event id are stored in one SQLite
  transaction, so a redelivered message is recognised and skipped;
- validation against the published schema: a message that does not conform is set
  aside (here: counted and reported) and never stops the partition;
- order per key: one partition holds everything about one entity, in order.

On the district's secured cluster, add the credentials the IOC gave your team:
`--security-protocol SASL_SSL --sasl-user phong-tn-mt --sasl-password-file secret.txt
--ca-file ioc-ca.pem` (SCRAM-SHA-512), or `--security-protocol SSL --ca-file ioc-ca.pem
--cert-file team.pem --key-file team.key` (mutual TLS).

It needs only `aiokafka` and `jsonschema` (pip install aiokafka==0.14.0 jsonschema==4.26.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context


def load_schema(path: Path) -> dict[str, Any]:
    """The message's JSON Schema: a released snapshot (`{"schema": ...}`) or a bare schema."""
    document = json.loads(path.read_text(encoding="utf-8"))
    schema: dict[str, Any] = document.get("schema", document)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


class Store:
    """What this consumer did, and the event ids it has done it for (the idempotency claim)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS processed (event_id TEXT PRIMARY KEY)")
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT, type TEXT, subject TEXT, "
                        "partition INTEGER, offset INTEGER)")

    def apply_once(self, event: dict[str, Any], partition: int, offset: int) -> bool:
        """Record the effect and claim the event id in one transaction; False if done before."""
        with self.db:  # one transaction: both rows or neither
            claimed = self.db.execute("INSERT OR IGNORE INTO processed VALUES (?)",
                                      (event["event_id"],)).rowcount
            if not claimed:
                return False
            self.db.execute("INSERT INTO seen VALUES (?, ?, ?, ?, ?)",
                            (event["event_id"], event["type"], event.get("subject"), partition, offset))
        return True


def security(args: argparse.Namespace) -> dict[str, Any]:
    """aiokafka's security arguments: clear text only when asked for (a local broker)."""
    options: dict[str, Any] = {"security_protocol": args.security_protocol}
    if args.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=args.ca_file, certfile=args.cert_file, keyfile=args.key_file)
    if args.security_protocol.startswith("SASL_"):
        password = Path(args.sasl_password_file).read_text(encoding="utf-8").strip()
        options |= {"sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": args.sasl_user,
                    "sasl_plain_password": password}
    return options


async def consume(args: argparse.Namespace) -> dict[str, int]:
    validator = jsonschema.Draft202012Validator(load_schema(Path(args.schema)))
    store = Store(args.state)
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed", client_id=args.group, **security(args))
    counts = {"handled": 0, "duplicates": 0, "invalid": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    idle = 0.0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            if not batch:
                idle += 0.5
                if args.idle_seconds and idle >= args.idle_seconds:
                    break
                continue
            idle = 0.0
            for tp, records in batch.items():
                for record in records:
                    where = {"partition": tp.partition, "offset": record.offset}
                    try:
                        event = json.loads(record.value)
                        validator.validate(event)
                    except (json.JSONDecodeError, UnicodeDecodeError, TypeError,
                            jsonschema.ValidationError) as exc:
                        # Set aside, never stop the partition: a real consumer would write
                        # it to its own dead-letter table or topic, with `where`.
                        counts["invalid"] += 1
                        reason = getattr(exc, "message", None) or type(exc).__name__
                        print(json.dumps({"invalid": reason[:200], **where}), file=sys.stderr)
                        continue
                    if store.apply_once(event, tp.partition, record.offset):
                        counts["handled"] += 1
                        print(json.dumps({"handled": event["event_id"], "type": event["type"],
                                          "subject": event.get("subject"), **where}), flush=True)
                    else:
                        counts["duplicates"] += 1
            # Effects are stored: now the offsets may be committed (at-least-once + idempotency).
            await consumer.commit()
            if args.max_messages and sum(counts.values()) >= args.max_messages:
                break
    finally:
        await consumer.stop()
        store.db.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True, help="the message's published JSON Schema")
    parser.add_argument("--group", required=True, help="your team's consumer group id")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--security-protocol", default="PLAINTEXT",
                        choices=["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"])
    parser.add_argument("--sasl-user", help="SCRAM-SHA-512 user (SASL_*)")
    parser.add_argument("--sasl-password-file", help="file holding the SCRAM password (SASL_*)")
    parser.add_argument("--ca-file", help="the IOC cluster's CA certificate (SSL, SASL_SSL)")
    parser.add_argument("--cert-file", help="your client certificate (mutual TLS)")
    parser.add_argument("--key-file", help="your client key (mutual TLS)")
    parser.add_argument("--state", default="consumer-state.sqlite", help="SQLite file of the effects")
    parser.add_argument("--idle-seconds", type=float, default=0, help="stop after this long idle")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after this many")
    counts = asyncio.run(consume(parser.parse_args()))
    print(json.dumps({"summary": counts}), flush=True)


if __name__ == "__main__":
    main()
