"""Target (b): the province's HTTPS data-sharing gateway.

One JSON POST per batch, with the batch's hash as `Idempotency-Key` and each record's
event id as its own key, so a batch sent again after a crash changes nothing at the
province. Network errors, 5xx and 429 (honouring Retry-After) are `Unreachable`: the
pipeline retries with exponential backoff and jitter. Any other 4xx is a `Refusal`: the
batch is parked with the province's answer and the rest goes on.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import date
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from ioc_shared.platform.telemetry import inject_trace_headers
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind

from sync_province.domain import Batch, Outgoing, Stream
from sync_province.targets import Confirm, Forwarding, LinkHealth, Refusal, Unreachable

_tracer = trace.get_tracer("sync-province")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def record_json(o: Outgoing, headers: Sequence[tuple[str, bytes]] | None = None
                ) -> dict[str, Any]:
    """`headers`: as they leave (default: `o`'s own)."""
    return {"event_id": o.event_id, "key": (o.key or b"").decode("utf-8", "replace"),
            "timestamp_ms": o.timestamp_ms, "partition": o.partition, "offset": o.offset,
            "headers": {k: v.decode("utf-8", "replace")
                        for k, v in (o.headers if headers is None else headers)},
            "value": orjson.Fragment(o.value)}


# Answers that blame the batch itself: park it and go on. Any other 4xx (401, 403, 404,
# ...) blames our side (credentials, address): parking would skip every batch, so retry
# and alert instead.
BATCH_AT_FAULT = frozenset({400, 409, 413, 415, 422})


class HttpTarget:
    name = "http"
    holds_positions = False
    transactional = False

    def __init__(self, base_url: str, district: str, *, token: str | None,
                 ca_file: Path | None = None, client_cert: tuple[Path, Path] | None = None,
                 timeout_s: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._district = district
        self._token = token
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None
        self.health = LinkHealth()

    def _verify(self) -> ssl.SSLContext | bool:
        if not self._base.startswith("https"):
            return False
        context = ssl.create_default_context(
            cafile=str(self._ca_file) if self._ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._client_cert:
            context.load_cert_chain(str(self._client_cert[0]), str(self._client_cert[1]))
        return context

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._client = httpx.AsyncClient(base_url=self._base, headers=headers,
                                         verify=self._verify(), timeout=self._timeout)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def positions(self) -> dict[tuple[str, int], int]:
        return {}      # this target's cursor lives in PostgreSQL

    async def _post(self, path: str, body: bytes, idempotency_key: str | None) -> httpx.Response:
        assert self._client is not None
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        inject_trace_headers(headers)   # the current span's (a batch's POST span)
        try:
            response = await self._client.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:
            self.health.failed("network")
            raise Unreachable(f"http: {type(exc).__name__}") from exc
        if response.status_code == 429:
            self.health.failed("throttled")
            raise Unreachable("http: 429", _retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500 or (
                response.status_code >= 400 and response.status_code not in BATCH_AT_FAULT):
            self.health.failed(f"http-{response.status_code}")
            raise Unreachable(f"http: {response.status_code} {response.text[:200]}")
        return response

    async def deliver(self, batches: list[Batch], confirm: Confirm, *,
                      record_positions: bool = True) -> list[Refusal]:
        refused: list[Refusal] = []
        delivered: list[Batch] = []
        for batch in batches:
            if batch.outgoing:
                forwarding = Forwarding()
                destination = f"{batch.stream.contract_topic} gateway"
                records = [record_json(o, forwarding.headers(o, destination))
                           for o in batch.outgoing]
                body = orjson.dumps({
                    "district": self._district, "stream": batch.stream.name,
                    "origin_topic": batch.stream.contract_topic, "batch_id": batch.digest(),
                    "records": records})
                # The POST is a child of its first record's span, linked to the others'.
                spans = [h.span.get_span_context() for h in forwarding.hops if h.span]
                with _tracer.start_as_current_span(
                        "POST /v1/batches", kind=SpanKind.CLIENT,
                        context=trace.set_span_in_context(NonRecordingSpan(spans[0]))
                        if spans else None,
                        links=[Link(c) for c in spans[1:]],
                        attributes={"http.request.method": "POST",
                                    "ioc.records": len(records)}):
                    try:
                        response = await self._post("/v1/batches", body, batch.digest())
                    except BaseException as exc:
                        forwarding.end(exc)
                        raise
                forwarding.end()
                if response.status_code >= 400:
                    self.health.failed(f"refused-{response.status_code}")
                    refused.append(Refusal(batch, response.status_code, response.text))
                    continue
            delivered.append(batch)
        self.health.ok()
        if delivered:
            await confirm(delivered)
        return refused

    async def day_event_ids(self, stream: Stream, day: date) -> set[str]:
        assert self._client is not None
        try:
            response = await self._client.get("/v1/reconcile", params={
                "stream": stream.name, "day": day.isoformat(), "ids": "1",
                "district": self._district})
        except httpx.TransportError as exc:
            raise Unreachable(f"http: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise Unreachable(f"http: reconcile answered {response.status_code}")
        return set(response.json()["event_ids"])

    async def send_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        response = await self._post("/v1/checkpoints", orjson.dumps(checkpoint), None)
        if response.status_code >= 400:
            raise Unreachable(f"http: checkpoint refused {response.status_code}")
