"""Signed report commands -> lifecycle transitions and on-demand reports, always answered.

As routing's commands: the principal is authenticated by the HMAC signature in the
headers, authorised by its roles, and each command is handled once (by event id and by
principal + command id). The answer (`reporting.command.result`, accepted or rejected
with a Vietnamese message) goes out through the outbox in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from ioc_shared.commands import command_id_of, screen_document, verified_sender
from ioc_shared.contracts.envelope import deterministic_event_id
from ioc_shared.contracts.headers import H_PRINCIPAL, H_SIGNATURE
from ioc_shared.contracts.hygiene import find_forbidden
from ioc_shared.platform.consumer import Delivery
from ioc_shared.platform.logging import get_logger
from ioc_shared.platform.metrics import bus_metrics
from ioc_shared.platform.outbox import enqueue_many

from reporting.domain import periods as pd
from reporting.domain.figures import Scope, build_figures, is_empty
from reporting.domain.formatting import CATEGORY_NAMES, DOMAIN_CATEGORY, DOMAIN_NAMES
from reporting.domain.incidents import LOCAL
from reporting.domain.lifecycle import (
    Command,
    Reason,
    Rejection,
    Status,
    Verb,
    accepted_message,
    authorise,
    parse_command,
    reject,
    transition,
)
from reporting.reports import ReportService, outgoing

log = get_logger(__name__)

RESULT = "reporting.command.result"
UNAUTHENTICATED = "reporting.command.unauthenticated"
CONSUMER = "reporting-commands"


class CommandHandler:
    def __init__(self, service: ReportService) -> None:
        self.service = service

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            await self._one(d)

    def _answer(self, *, unit: str, cause: uuid.UUID, status: str, reason: Reason | None,
                message: str, command_id: uuid.UUID | None, verb: str | None,
                principal: str | None, report: dict[str, Any] | None = None,
                duplicate: bool = False) -> Any:
        payload: dict[str, Any] = {
            "command_id": str(command_id) if command_id else None, "command": verb,
            "status": status, "reason_code": reason.value if reason else None, "message": message,
            "principal": principal, "unit": unit,
            "report_id": str(report["report_id"]) if report else None,
            "report_status": report["status"] if report else None,
            "number": report.get("number") if report else None,
            "period": report["period_key"] if report else None,
            "version": report["version"] if report else None,
        }
        if duplicate:
            payload["duplicate"] = True
        if reason is not None:
            bus_metrics(self.service.metrics).rejected.labels("reporting", reason.value).inc()
        return outgoing(self.service.topics.results, RESULT, unit, payload,
                        deterministic_event_id(cause, "result"), self.service.ioc_unit,
                        self.service.clock())

    async def _one(self, d: Delivery) -> None:
        svc = self.service
        principal_id = d.header(H_PRINCIPAL)
        principal = verified_sender(svc.registry, principal_id, d.header(H_SIGNATURE), d.value)
        doc, refusal = screen_document(d.value)
        env = doc if refusal is None else None
        cause = deterministic_event_id(d.topic, d.partition, d.offset)
        if env is not None:
            try:
                cause = uuid.UUID(str(env.get("event_id")))
            except ValueError:
                env = None
        payload = env.get("payload") if env is not None else None
        payload = payload if isinstance(payload, dict) else {}
        command_id = command_id_of(payload)
        event_type = str(env.get("type")) if env is not None else ""
        verb_text = event_type.rsplit(".", 1)[-1] if env is not None else None
        claimed_principal = (principal_id or "")[:100] or None
        if claimed_principal is not None and find_forbidden(claimed_principal) is not None:
            claimed_principal = "<not printable>"
        if principal is None:
            # Answered to the operators only, keyed by the command's origin: whoever can
            # write the commands topic must not write into a unit's feed.
            no = reject(Reason.UNAUTHENTICATED)
            bus_metrics(svc.metrics).rejected.labels("reporting", no.reason.value).inc()
            log.warning("report command: unauthenticated", claimed_principal=claimed_principal,
                        topic=d.topic, partition=d.partition, offset=d.offset)
            payload_out = {
                "command_id": str(command_id) if command_id else None,
                "command": verb_text[:60] if verb_text else None, "status": "rejected",
                "reason_code": no.reason.value, "message": no.message,
                "claimed_principal": claimed_principal,
                "origin": {"topic": d.topic, "partition": d.partition, "offset": d.offset}}
            await self._answer_only(cause, outgoing(
                svc.topics.unauthenticated, UNAUTHENTICATED, f"{d.topic}:{d.partition}",
                payload_out, deterministic_event_id(cause, "result"), svc.ioc_unit,
                svc.clock()))
            return
        parsed = (parse_command(event_type, payload) if env is not None
                  else reject(Reason.MALFORMED, "không phải một envelope hợp lệ"))
        if isinstance(parsed, Rejection):
            await self._answer_only(cause, self._answer(
                unit=principal.unit, cause=cause, status="rejected", reason=parsed.reason,
                message=parsed.message, command_id=command_id, verb=verb_text,
                principal=principal.id))
            return
        await self._execute(parsed, principal.id, principal.unit, frozenset(principal.roles), cause)

    async def answer_parked(self, d: Delivery, _: BaseException) -> None:
        """Tell the sender of a parked command that it failed on our side (`internal_error`),
        once (its own answer id, claimed); an unverified sender is answered to the operators."""
        svc = self.service
        principal = verified_sender(svc.registry, d.header(H_PRINCIPAL), d.header(H_SIGNATURE),
                                    d.value)
        answer_id = deterministic_event_id("parked", d.origin)
        no = reject(Reason.INTERNAL_ERROR)
        if principal is None:
            message = outgoing(svc.topics.unauthenticated, UNAUTHENTICATED,
                               f"{d.topic}:{d.partition}",
                               {"status": "rejected", "reason_code": no.reason.value,
                                "message": no.message, "origin": {
                                    "topic": d.topic, "partition": d.partition,
                                    "offset": d.offset}},
                               deterministic_event_id(answer_id, "result"), svc.ioc_unit,
                               svc.clock())
        else:
            message = self._answer(unit=principal.unit, cause=answer_id, status="rejected",
                                   reason=no.reason, message=no.message, command_id=None,
                                   verb=None, principal=principal.id)
        await self._answer_only(answer_id, message)

    async def _answer_only(self, cause: uuid.UUID, message: Any) -> None:
        svc = self.service
        async with svc.pool.acquire() as conn, conn.transaction():
            if await svc.repo.claim_events(conn, CONSUMER, [cause]):
                await enqueue_many(conn, svc.repo.s, [message])

    async def _execute(self, cmd: Command, principal: str, unit: str, roles: frozenset[str],
                       cause: uuid.UUID) -> None:
        svc, repo = self.service, self.service.repo
        messages: list[Any] = []

        def answer(status: str, reason: Reason | None, message: str,
                   report: dict[str, Any] | None = None, duplicate: bool = False) -> None:
            messages.append(self._answer(unit=unit, cause=cause, status=status, reason=reason,
                                         message=message, command_id=cmd.command_id,
                                         verb=cmd.verb.value, principal=principal, report=report,
                                         duplicate=duplicate))

        async with svc.pool.acquire() as conn, svc.transaction(conn):
            if not await repo.claim_events(conn, CONSUMER, [cause]):
                return   # redelivery of a command already answered
            if not await repo.claim_command(conn, principal, cmd.command_id, cmd.verb.value):
                earlier = await repo.command_status(conn, principal, cmd.command_id)
                no = reject(Reason.DUPLICATE_COMMAND)
                answer(earlier or "rejected", Reason.DUPLICATE_COMMAND, no.message, duplicate=True)
                await enqueue_many(conn, repo.s, messages)
                return
            outcome = await self.decide(conn, cmd, principal, roles)
            if isinstance(outcome, Rejection):
                answer("rejected", outcome.reason, outcome.message)
                await repo.record_command(conn, principal, cmd.command_id, "rejected",
                                          outcome.reason.value)
                log.info("report command rejected", verb=cmd.verb.value, principal=principal,
                         reason=outcome.reason.value)
            else:
                answer("accepted", None, accepted_message(cmd.verb, Status(outcome["status"]),
                                                          outcome.get("number")), outcome)
                await repo.record_command(conn, principal, cmd.command_id, "accepted", None)
                log.info("report command accepted", verb=cmd.verb.value, principal=principal,
                         report=str(outcome["report_id"]), status=outcome["status"])
            await enqueue_many(conn, repo.s, messages)

    async def decide(self, conn: asyncpg.Connection, cmd: Command, principal: str,
                      roles: frozenset[str]) -> dict[str, Any] | Rejection:
        denied = authorise(cmd.verb, roles)
        if denied is not None:
            return denied
        if cmd.verb in (Verb.GENERATE, Verb.REQUEST):
            return await self._create(conn, cmd, principal)
        assert cmd.report_id is not None
        svc = self.service
        report = await svc.repo.load_report(conn, cmd.report_id, for_update=True)
        if report is None:
            return reject(Reason.UNKNOWN_REPORT, str(cmd.report_id))
        target = transition(cmd.verb, Status(report["status"]))
        if isinstance(target, Rejection):
            return target
        latest = await svc.repo.latest_version(conn, report["period_key"])
        if cmd.verb in (Verb.SUBMIT, Verb.APPROVE, Verb.ISSUE) and latest != report["version"]:
            return reject(Reason.SUPERSEDED, f"phiên bản {latest}")
        now = svc.clock()
        if target is Status.ISSUED:
            return await svc.issue(conn, report, actor=principal)
        await svc.repo.update_report(conn, report["report_id"], status=target.value,
                                     history_entry={"status": target.value, "by": principal,
                                                    "at": now.isoformat()})
        return {**report, "status": target.value}

    async def _create(self, conn: asyncpg.Connection, cmd: Command,
                      principal: str) -> dict[str, Any] | Rejection:
        svc = self.service
        request = cmd.verb is Verb.REQUEST
        kind = pd.Kind(cmd.kind) if request and cmd.kind else (pd.Kind.THEMATIC if request else None)
        try:
            period = pd.parse(cmd.period or "", svc.config.rules, kind)
        except pd.PeriodError as exc:
            return reject(Reason.BAD_PERIOD, str(exc))
        scope_or_no = self.scope(cmd) if request else Scope()
        if isinstance(scope_or_no, Rejection):
            return scope_or_no
        today = svc.clock().astimezone(LOCAL).date()
        if request and period.end >= today:
            return reject(Reason.FUTURE_PERIOD, period.label)
        if not request and period.start > today:
            return reject(Reason.FUTURE_PERIOD, period.label)
        figures = None
        if request:
            figures = build_figures(await svc.inputs(conn, period, scope_or_no), svc.names)
            if is_empty(figures):
                return reject(Reason.EMPTY_PERIOD, period.label)
        return await svc.generate(conn, period, scope_or_no, actor=principal, figures=figures)

    def scope(self, cmd: Command) -> Scope | Rejection:
        registry = self.service.registry
        if cmd.unit and cmd.unit not in registry.units:
            return reject(Reason.UNKNOWN_UNIT, cmd.unit)
        if cmd.commune and cmd.commune not in {c.id for c in registry.communes()}:
            return reject(Reason.UNKNOWN_COMMUNE, cmd.commune)
        if cmd.category and cmd.category not in CATEGORY_NAMES:
            return reject(Reason.UNKNOWN_CATEGORY, cmd.category)
        if cmd.domain and cmd.domain not in DOMAIN_NAMES:
            return reject(Reason.UNKNOWN_DOMAIN, cmd.domain)
        # A domain with an incident category of its own also narrows the incidents.
        category = cmd.category or DOMAIN_CATEGORY.get(cmd.domain or "")
        return Scope(cmd.domain, cmd.commune, cmd.unit, category)
