"""HTTP intake for unit systems that cannot speak Kafka: `POST /intake/{dataset}`.

Authenticated with `Authorization: Bearer <unit secret>`. The body is one
record (JSON object), a batch (JSON array, or `{"records": [...]}`) or CSV
(`text/csv`, header row = field names). Each record becomes the same signed
submission a Kafka producer would send and goes through the same pipeline;
the answer lists, per record, whether it was accepted or why it was rejected.
An `Idempotency-Key` header makes a retried request re-publish (same event
ids) instead of being rejected as duplicates.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from ioc_shared.platform.telemetry import inject_trace_headers
from ioc_shared.registry import Registry, sign
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingest.domain import Code, Inbound
from ingest.domain.codes import message_vi
from ingest.domain.submission import H_PRINCIPAL, H_SIGNATURE
from ingest.handlers import IngestPipeline, Outcome
from ingest.settings import IngestSettings

_tracer = trace.get_tracer("ingest.http")


def _error(status: int, code: Code, detail: str | None = None) -> JSONResponse:
    body = {"code": code.value, "message_vi": message_vi(code)}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


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
            return JSONResponse({"code": "starting", "message_vi": "Dịch vụ đang khởi động."},
                                status_code=503, headers={"Retry-After": "5"})
        if not self.ready():
            return JSONResponse({"code": "unavailable",
                                 "message_vi": "Dịch vụ tạm thời không nhận dữ liệu; "
                                               "vui lòng gửi lại sau."},
                                status_code=503, headers={"Retry-After": "5"})
        registry = pipeline.registry
        auth = request.headers.get("authorization", "")
        principal = registry.authenticate_token(auth[7:].strip()) if auth[:7].lower() == "bearer " \
            else None
        if principal is None:
            return _error(401, Code.UNAUTHENTICATED, "Authorization: Bearer <mã truy cập của đơn vị>")
        declared = int(request.headers.get("content-length") or 0)
        if declared > self.settings.http_max_body_bytes:
            return _error(413, Code.TOO_LARGE, f"tối đa {self.settings.http_max_body_bytes} byte")
        body = await request.body()
        if len(body) > self.settings.http_max_body_bytes:
            return _error(413, Code.TOO_LARGE, f"tối đa {self.settings.http_max_body_bytes} byte")
        dataset = request.path_params["dataset"]
        try:
            records = _records(body, request.headers.get("content-type", ""))
        except UnicodeDecodeError:
            return _error(400, Code.UNDECODABLE)
        except ValueError as exc:
            return _error(400, Code.MALFORMED_JSON, str(exc))
        if len(records) > self.settings.http_max_records:
            return _error(413, Code.TOO_LARGE, f"tối đa {self.settings.http_max_records} bản ghi mỗi lần")
        version = _schema_version(request, registry, dataset)
        if version is None:
            return _error(400, Code.UNKNOWN_SCHEMA_VERSION, "schema_version phải là số nguyên")
        batch_key = request.headers.get("idempotency-key") or uuid.uuid4().hex
        with _tracer.start_as_current_span("ingest http intake") as span:
            span.set_attribute("ioc.dataset", dataset)
            span.set_attribute("ioc.records", len(records))
            secret = registry.secret_of(principal.id) or b""
            inbounds = [_inbound(principal.id, secret, dataset, version, record,
                                 f"http:{principal.id}:{batch_key[:100]}:{i}", i)
                        for i, record in enumerate(records)]
            outcomes = await pipeline.process(inbounds)
        results = [_result(o) for o in outcomes]
        accepted = sum(1 for r in results if r["status"] == "accepted")
        return JSONResponse({"dataset": dataset, "schema_version": version, "unit": principal.unit,
                             "accepted": accepted, "rejected": len(results) - accepted,
                             "results": results})


def _records(body: bytes, content_type: str) -> list[Any]:
    if content_type.split(";")[0].strip().lower() in ("text/csv", "application/csv"):
        text = body.decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise ValueError("CSV không có dòng tiêu đề")
        # Empty cells are absent values, not empty strings.
        return [{k: v for k, v in row.items() if k and v not in (None, "")} for row in reader]
    body.decode("utf-8")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"JSON không hợp lệ: {exc}") from None
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
