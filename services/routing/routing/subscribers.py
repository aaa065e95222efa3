"""Kafka entry points. Thin: raw records in, handler call, nothing else.

Both consumers are the kit's `DurableConsumer` (ioc_shared.platform.consumer),
which states the failure policy: offsets are committed only after the handler
returned (its PostgreSQL transaction of state + processed-event claim + outbox
committed); while PostgreSQL or Kafka is down the same batch is retried; a record
that keeps failing for another reason is parked after the policy's attempts and
the partition goes on (`python -m routing parked list | replay`). Bad *input*
does not get there: the intake skips records it cannot use (logged) and every bad
command gets a rejected answer. A parked command is answered too, with the reason
`internal_error`, so its sender is not left waiting.
"""

from __future__ import annotations

from collections.abc import Sequence

from ioc_shared.commands import bounded_text, command_id_of, verified_sender
from ioc_shared.contracts.envelope import Envelope, deterministic_event_id
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.platform.consumer import Delivery, DurableConsumer, FailurePolicy
from ioc_shared.platform.kafka import decode_headers
from ioc_shared.platform.outbox import enqueue_many
from prometheus_client import CollectorRegistry

from routing.handlers import (
    COMMAND_CONSUMER,
    INTAKE_CONSUMER,
    CommandHandler,
    Inbound,
    IntakeHandler,
    RoutingCore,
)
from routing.publishing import command_result, unauthenticated_answer

INTERNAL_ERROR = "internal_error"
INTERNAL_ERROR_MESSAGE = ("Hệ thống gặp lỗi nội bộ khi xử lý lệnh này; lệnh đã được lưu lại "
                          "để xử lý lại sau khi khắc phục.")


def _inbound(d: Delivery) -> Inbound:
    return Inbound(d.topic, d.partition, d.offset, d.value, decode_headers(d.headers))


def routing_consumers(core: RoutingCore, *, intake: IntakeHandler, commands: CommandHandler,
                      incident_topics: Sequence[str], commands_topic: str, group: str,
                      max_records: int, batch_timeout_ms: int,
                      metrics: CollectorRegistry | None = None,
                      policy: FailurePolicy | None = None) -> list[DurableConsumer]:
    """The intake (a batch per transaction) and the commands (one per transaction)."""

    async def on_incident_records(batch: Sequence[Delivery]) -> None:
        await intake.handle_batch([_inbound(d) for d in batch])

    async def on_commands(batch: Sequence[Delivery]) -> None:
        for d in batch:
            await commands.handle(_inbound(d))

    async def on_parked_command(delivery: Delivery, _: BaseException) -> None:
        await answer_internal_error(core, delivery)

    return [
        DurableConsumer(INTAKE_CONSUMER, incident_topics, f"{group}-intake", on_incident_records,
                        pool=core.pool, schema=core.repo.s, policy=policy,
                        max_records=max_records, batch_timeout_ms=batch_timeout_ms,
                        metrics=metrics),
        DurableConsumer(COMMAND_CONSUMER, [commands_topic], f"{group}-commands", on_commands,
                        pool=core.pool, schema=core.repo.s, policy=policy, batch=False,
                        on_parked=on_parked_command, metrics=metrics),
    ]


async def answer_internal_error(core: RoutingCore, delivery: Delivery) -> None:
    """Tell the sender of a parked command that it failed on our side (`internal_error`).

    The answer has an id of its own (not the one a later replay's answer gets), claimed
    so that a redelivery of the parked record does not answer twice.
    """
    record = _inbound(delivery)
    env: Envelope | None
    try:
        env = Envelope.from_bytes(record.value)
    except Exception:   # whatever made it fail may be here too: answer with what is known
        env = None
    principal_id = record.headers.get(H_PRINCIPAL) or ""
    principal = verified_sender(core.registry, principal_id, record.headers.get(H_SIGNATURE),
                                record.value)
    cause_id = env.event_id if env is not None else record.position_id
    answer_id = deterministic_event_id(cause_id, "parked", delivery.origin)
    effects = core.effects()
    command_id = command_id_of(env.payload) if env else None
    verb = bounded_text(env.type.rsplit(".", 1)[-1], 40) if env else None
    incident_id = bounded_text(env.subject, 200) if env else None
    if principal is None:
        # Not authenticated: to the operators, never to the unit the sender claims.
        unauthenticated_answer(effects, cause_id=answer_id, origin_topic=record.topic,
                               origin_partition=record.partition, origin_offset=record.offset,
                               reason_code=INTERNAL_ERROR, message=INTERNAL_ERROR_MESSAGE,
                               claimed_principal=bounded_text(principal_id, 100),
                               command_id=command_id, verb=verb, incident_id=incident_id)
    else:
        command_result(effects, unit=principal.unit, cause_id=answer_id, cause=env,
                       status="rejected", reason_code=INTERNAL_ERROR,
                       message=INTERNAL_ERROR_MESSAGE, command_id=command_id, verb=verb,
                       incident_id=incident_id, principal=principal.id)
    async with core.pool.acquire() as conn, conn.transaction():
        if await core.repo.claim_events(conn, COMMAND_CONSUMER, [answer_id]):
            await enqueue_many(conn, core.repo.s, effects.messages)
