"""HTTP intake for unit systems that cannot speak Kafka: `POST /intake/{dataset}`.

Authenticated with `Authorization: Bearer <token>`: the unit's HTTP token, not its
signing key (the credentials file holds the token's hash). The body is one record
(JSON object), a batch (JSON array, or `{"records": [...]}`) or CSV (`text/csv`,
header row = field names), at most `INGEST_HTTP_MAX_BODY_BYTES`, counted while it
streams in. Each record becomes the same signed submission a Kafka producer would
send and goes through the same pipeline; the answer lists, per record, whether it
was accepted or why it was rejected. A request refused as a whole (401, 400, 413,
415, 500) gets a JSON answer with its code and leaves the same audit as the Kafka
door: a rejection message and the raw body (up to `QUARANTINE_MAX_BYTES`) in
quarantine. An `Idempotency-Key` header makes a retried request re-publish (same
event ids) instead of being rejected as duplicates.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from ioc_shared.contracts.hygiene import HygieneError, loads_strict, strip_bom
from ioc_shared.platform.telemetry import extract_trace_context, inject_trace_headers
from ioc_shared.registry import Principal, Registry, sign
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingest.domain import Code, Inbound, Problem, Rejected
from ingest.domain.codes import message_vi
from ingest.domain.submission import H_PRINCIPAL, H_SIGNATURE
from ingest.handlers import IngestPipeline, Outcome
from ingest.messages import H_Q_TRUNCATED
from ingest.settings import IngestSettings

_tracer = trace.get_tracer("ingest.http")
log = structlog.get_logger("ingest.http")
# The quarantine copy of a refused body keeps at most this much (a Kafka message).
QUARANTINE_MAX_BYTES = 512 * 1024
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")
_JSON_TYPES = ("", "application/json", "text/json", "text/plain")
_CSV_TYPES = ("text/csv", "application/csv")


class _Refused(Exception):
    """A request refused as a whole: its status, code and detail."""

    def __init__(self, status: int, code: Code, detail: str | None = None) -> None:
        super().__init__(code.value)
        self.status, self.code, self.detail = status, code, detail


@dataclass(slots=True)
class _Received:
    """What was read of a request so far (for its audit)."""

    request_id: str
    principal: Principal | None = None
    dataset: str | None = None          # a registry id, never the raw path
    body: bytes = b""
    size: int = 0                       # bytes received (more than `body` when cut)
    content_type: str = ""


class HttpIntake:
    """Holds the pipeline once the service has started; answers 503 before that."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.pipeline: IngestPipeline | None = None
        # The runtime's readiness (dependencies up): answered from memory.
        self.ready: Callable[[], bool] = lambda: True

    def routes(self) -> list[Route]:
        return [Route("/intake/{dataset}", self.intake, methods=["POST"])]

    async def intake(self, request: Request) -> JSONResponse:
        pipeline = self.pipeline
        if pipeline is None:
            # Nothing to audit with yet (no producer): the sender retries.
            return JSONResponse({"code": "starting", "message_vi": "Dịch vụ đang khởi động."},
                                status_code=503, headers={"Retry-After": "5"})
        if not self.ready():
            return JSONResponse({"code": "unavailable",
                                 "message_vi": "Dịch vụ tạm thời không nhận dữ liệu; "
                                               "vui lòng gửi lại sau."},
                                status_code=503, headers={"Retry-After": "5"})
        received = _Received(uuid.uuid4().hex)
        # The sender's `traceparent`/`tracestate` (W3C), if any, is the parent of the intake.
        with _tracer.start_as_current_span("ingest http intake", kind=SpanKind.SERVER,
                                           context=extract_trace_context(request.headers)) as span:
            try:
                return await self._intake(pipeline, request, received, span)
            except _Refused as refused:
                return await self._refuse(pipeline, received, refused)
            except Exception as exc:
                trace_id = f"{span.get_span_context().trace_id:032x}"
                # No message or payload in the log: they may hold personal data.
                log.error("internal error in HTTP intake", error=type(exc).__name__,
                          trace_id=trace_id, request_id=received.request_id)
                try:
                    await self._audit(pipeline, received, Code.INTERNAL_ERROR, None)
                except Exception as audit_exc:   # the broker may be what failed
                    log.error("HTTP intake audit failed", error=type(audit_exc).__name__,
                              trace_id=trace_id, request_id=received.request_id)
                return JSONResponse({"code": Code.INTERNAL_ERROR.value,
                                     "message_vi": message_vi(Code.INTERNAL_ERROR),
                                     "trace_id": trace_id, "request_id": received.request_id},
                                    status_code=500)

    async def _intake(self, pipeline: IngestPipeline, request: Request, received: _Received,
                      span: Any) -> JSONResponse:
        registry = pipeline.registry
        settings = self.settings
        dataset = request.path_params["dataset"]
        received.dataset = dataset if dataset in registry.datasets else None
        received.content_type = request.headers.get("content-type", "")[:100]
        span.set_attribute("ioc.dataset", received.dataset or "unknown")
        auth = request.headers.get("authorization", "")
        received.principal = (registry.authenticate_token(auth[7:].strip())
                              if auth[:7].lower() == "bearer " else None)
        if received.principal is None:
            # Keep what an operator needs to see who tried, not more.
            await self._read(request, received, QUARANTINE_MAX_BYTES)
            raise _Refused(401, Code.UNAUTHENTICATED, "Authorization: Bearer <mã truy cập HTTP của đơn vị>")
        media = received.content_type.split(";")[0].strip().lower()
        if media not in _JSON_TYPES and media not in _CSV_TYPES:
            await self._read(request, received, QUARANTINE_MAX_BYTES)
            raise _Refused(415, Code.UNSUPPORTED_MEDIA_TYPE, "application/json hoặc text/csv")
        limit = settings.http_max_body_bytes
        declared = request.headers.get("content-length")
        too_large = _Refused(413, Code.TOO_LARGE, f"tối đa {limit} byte")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise too_large
        if not await self._read(request, received, limit):
            raise too_large
        batch_key = request.headers.get("idempotency-key") or uuid.uuid4().hex
        if not _IDEMPOTENCY_KEY.match(batch_key):
            raise _Refused(400, Code.MALFORMED_SUBMISSION,
                           "Idempotency-Key: 1..100 ký tự A-Z a-z 0-9 . _ : -")
        records = _records(received.body, media in _CSV_TYPES)
        if len(records) > settings.http_max_records:
            raise _Refused(413, Code.TOO_LARGE, f"tối đa {settings.http_max_records} bản ghi mỗi lần")
        version = _schema_version(request, registry, dataset)
        if version is None:
            raise _Refused(400, Code.UNKNOWN_SCHEMA_VERSION, "schema_version phải là số nguyên")
        principal = received.principal
        span.set_attribute("ioc.records", len(records))
        secret = registry.secret_of(principal.id) or b""
        try:
            inbounds = [_inbound(principal.id, secret, dataset, version, record,
                                 f"http:{principal.id}:{batch_key}:{i}", i)
                        for i, record in enumerate(records)]
        except orjson.JSONEncodeError:   # nested deeper than a submission can be written
            raise _Refused(400, Code.MALFORMED_JSON, "JSON lồng nhau quá sâu") from None
        outcomes = await pipeline.process(inbounds)
        results = [_result(o) for o in outcomes]
        accepted = sum(1 for r in results if r["status"] == "accepted")
        return JSONResponse({"dataset": received.dataset, "schema_version": version,
                             "unit": principal.unit, "accepted": accepted,
                             "rejected": len(results) - accepted, "results": results})

    async def _read(self, request: Request, received: _Received, limit: int) -> bool:
        """Read the body as it streams in, at most `limit` bytes: False (and the rest
        left unread, so never in memory) when there is more."""
        chunks: list[bytes] = []
        kept = 0
        async for chunk in request.stream():
            received.size += len(chunk)
            if kept + len(chunk) > limit:
                received.body = _head([*chunks, chunk], QUARANTINE_MAX_BYTES)  # for the audit
                return False
            chunks.append(chunk)
            kept += len(chunk)
        received.body = b"".join(chunks)
        return True

    async def _refuse(self, pipeline: IngestPipeline, received: _Received,
                      refused: _Refused) -> JSONResponse:
        """Answer a request refused as a whole, after its audit is on the broker."""
        rejection = await self._audit(pipeline, received, refused.code, refused.detail)
        body: dict[str, Any] = {"code": refused.code.value, "message_vi": rejection.message_vi,
                                "request_id": received.request_id}
        if refused.detail:
            body["detail"] = refused.detail
        return JSONResponse(body, status_code=refused.status)

    async def _audit(self, pipeline: IngestPipeline, received: _Received, code: Code,
                     detail: str | None) -> Rejected:
        """The rejection message and the quarantine copy, as the Kafka door leaves them."""
        principal = received.principal
        rejection = Rejected(
            code, (Problem(code, None, detail),),
            unit=principal.unit if principal else None,
            principal=principal.id if principal else None, dataset=received.dataset,
            extra={} if principal else {"identity_verified": False})
        body = received.body[:QUARANTINE_MAX_BYTES]
        headers = [("content-type", received.content_type.encode("latin-1", "replace"))]
        if principal is not None:
            headers.append((H_PRINCIPAL, principal.id.encode()))
        if received.size > len(body):
            headers.append((H_Q_TRUNCATED, str(received.size).encode()))
        who = principal.id if principal else "anonymous"
        inbound = Inbound(value=body, headers=tuple(headers),
                          origin=f"http:{who}:{received.request_id}", channel="http")
        await pipeline.reject_whole(inbound, rejection)
        return rejection


def _head(chunks: list[bytes], size: int) -> bytes:
    """The first `size` bytes of `chunks`, without joining the rest."""
    out, total = [], 0
    for chunk in chunks:
        if total >= size:
            break
        out.append(chunk[:size - total])
        total += len(out[-1])
    return b"".join(out)


def _records(body: bytes, csv_body: bool) -> list[Any]:
    if csv_body:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _Refused(400, Code.UNDECODABLE) from None
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise _Refused(400, Code.MALFORMED_SUBMISSION, "CSV không có dòng tiêu đề")
        # Empty cells are absent values, not empty strings.
        return [{k: v for k, v in row.items() if k and v not in (None, "")} for row in reader]
    try:
        parsed = loads_strict(body)
    except RecursionError:   # the duplicate-key check's parser on a very deep document
        raise _Refused(400, Code.MALFORMED_JSON, "JSON lồng nhau quá sâu") from None
    except HygieneError as exc:
        if exc.code == "duplicate_key":
            raise _Refused(400, Code.DUPLICATE_KEY, exc.path[:200]) from None
        try:
            strip_bom(body).decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(400, Code.UNDECODABLE) from None
        raise _Refused(400, Code.MALFORMED_JSON, "JSON không hợp lệ") from None
    if isinstance(parsed, dict) and isinstance(parsed.get("records"), list):
        return list(parsed["records"])
    if isinstance(parsed, list):
        return parsed
    return [parsed]


def _schema_version(request: Request, registry: Registry, dataset: str) -> int | None:
    raw = request.query_params.get("schema_version") or request.headers.get("x-schema-version")
    if raw is None:
        ds = registry.datasets.get(dataset)
        return ds.canonical_version if ds is not None else 1
    try:
        return int(raw)
    except ValueError:
        return None


def _inbound(principal: str, secret: bytes, dataset: str, version: int, record: Any, origin: str,
             index: int) -> Inbound:
    submission: dict[str, Any] = {"dataset": dataset, "schema_version": version, "record": record}
    if isinstance(record, dict) and "event_id" in record:
        record = dict(record)
        submission["event_id"] = record.pop("event_id")
        submission["record"] = record
    value = orjson.dumps(submission)
    headers = {H_PRINCIPAL: principal, H_SIGNATURE: sign(secret, value)}
    inject_trace_headers(headers)
    return Inbound(value=value, headers=tuple((k, v.encode()) for k, v in headers.items()),
                   origin=origin, key=principal.encode(), channel="http", index=index)


def _result(outcome: Outcome) -> dict[str, Any]:
    acc = outcome.accepted
    if acc is not None:
        return {"index": outcome.inbound.index, "status": "accepted", "record_id": acc.record_id,
                "event_id": str(acc.event_id), "repeated_request": outcome.status == "redelivered"}
    rej = outcome.rejected
    assert rej is not None
    return {"index": outcome.inbound.index, "status": "rejected", "record_id": rej.record_id,
            "code": rej.code.value, "message_vi": rej.message_vi,
            "problems": [p.to_json() for p in rej.problems]}
