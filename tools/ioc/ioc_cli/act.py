"""`ioc act VERB INCIDENT`: a routing command signed as the operator, and routing's answer.

The command is what routing's contract asks (services/routing/README.md): an envelope
`routing.command.<verb>` keyed and subjected by the incident id, payload with a fresh
`command_id`, headers `ioc-principal` and `ioc-signature` (hex HMAC-SHA256 of the exact
value). The answer is the `routing.command.result` with that command id on the
command-results topic, read from its end as it was before the command was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from ioc_shared.contracts import Envelope
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.contracts.topics import (
    ROUTING_COMMAND_RESULTS,
    ROUTING_COMMANDS,
    ROUTING_UNAUTHENTICATED_COMMANDS,
)
from ioc_shared.platform.kafka import envelope_headers, make_consumer, make_producer
from ioc_shared.registry import RegistryError, load_registry, sign

from ioc_cli.brokers import partitions_of
from ioc_cli.environment import Credential, OperatorSettings
from ioc_cli.errors import Unreachable, kafka_unreachable

COMMAND_PREFIX = "routing.command."
RESULT_TYPE = "routing.command.result"
UNAUTHENTICATED_TYPE = "routing.command.unauthenticated"


def command_envelope(verb: str, incident_id: str, source_unit: str,
                     fields: dict[str, Any]) -> Envelope:
    payload = {"command_id": str(uuid.uuid4()),
               **{k: v for k, v in fields.items() if v is not None}}
    return Envelope(type=f"{COMMAND_PREFIX}{verb}", source_unit=source_unit, subject=incident_id,
                    payload=payload)


def signed_headers(envelope: Envelope, value: bytes, credential: Credential) -> list[tuple[str, bytes]]:
    """Principal, signature and a trace context: the command starts a trace of its own
    (`ioc trace` shows it, and routing's answer is in it)."""
    headers = envelope_headers(envelope, {H_PRINCIPAL: credential.principal,
                                          H_SIGNATURE: sign(credential.secret, value)})
    headers.setdefault("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")
    return [(k, v.encode()) for k, v in headers.items()]


def trace_id_of(headers: list[tuple[str, bytes]]) -> str:
    return dict(headers)["traceparent"].decode().split("-")[1]


def unit_of(settings: OperatorSettings, principal: str) -> str:
    """The principal's unit for the envelope (routing takes who acts from the signature only)."""
    try:
        found = load_registry(settings.registry_file).principals.get(principal)
    except (RegistryError, OSError):
        found = None
    return found.unit if found is not None else principal


async def send_and_wait(settings: OperatorSettings, envelope: Envelope, credential: Credential,
                        timeout_s: float = 15.0) -> dict[str, Any]:
    commands = settings.topic(ROUTING_COMMANDS).name
    results = settings.topic(ROUTING_COMMAND_RESULTS).name
    # A command that fails authentication is answered on the operators' topic instead.
    unauthenticated = settings.topic(ROUTING_UNAUTHENTICATED_COMMANDS).name
    consumer = make_consumer(bootstrap=settings.kafka_bootstrap, group_id=None,
                             request_timeout_ms=5000)
    producer = make_producer(settings.kafka_bootstrap, client_id="ioc-cli",
                             request_timeout_ms=5000)
    try:
        await asyncio.wait_for(consumer.start(), 5)
        await asyncio.wait_for(producer.start(), 5)
    except Exception as exc:
        await _stop(consumer, producer)
        raise kafka_unreachable(settings.kafka_bootstrap, exc) from None
    try:
        tps = [TopicPartition(topic, p) for topic in (results, unauthenticated)
               for p in sorted(await partitions_of(settings.kafka_bootstrap, topic))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve "end" now, before the command goes out
        value = envelope.to_bytes()
        headers = signed_headers(envelope, value, credential)
        await producer.send_and_wait(commands, value, key=envelope.key, headers=headers)
        command_id = envelope.payload["command_id"]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for record in records:
                    found = _result_for(record.value, command_id)
                    if found is not None:
                        return {**found, "trace_id": trace_id_of(headers)}
        raise Unreachable(f"no answer from routing within {timeout_s:.0f} s "
                          f"(command {command_id} was sent to {commands})",
                          where=settings.kafka_bootstrap,
                          hint="is routing running and caught up? see 'ioc status'")
    finally:
        await _stop(consumer, producer)


def _result_for(value: bytes | None, command_id: str) -> dict[str, Any] | None:
    try:
        env = Envelope.from_bytes(value or b"")
    except ValueError:
        return None
    if (env.type in (RESULT_TYPE, UNAUTHENTICATED_TYPE)
            and str(env.payload.get("command_id")) == command_id):
        return env.payload
    return None


async def _stop(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
    for stopping in (consumer.stop(), producer.stop()):
        with contextlib.suppress(Exception):  # stopping what never started
            await asyncio.wait_for(stopping, 5)
