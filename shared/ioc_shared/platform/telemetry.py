"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers."""

from __future__ import annotations

import base64
import functools
import json
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

TRACES_FILE_ENV = "IOC_TRACES_FILE"
TRACE_DB_ENV = "IOC_TRACE_DB"


def setup_tracing(service_name: str, otlp_endpoint: str | None = None,
                  exporter: SpanExporter | None = None, *, traces_file: str | Path | None = None,
                  trace_db: bool | None = None) -> TracerProvider:
    """A tracer provider for the service: OTLP export when configured, none otherwise.

    Exporters: `exporter` (tests), an OTLP/HTTP collector at `otlp_endpoint` (or
    `OTEL_EXPORTER_OTLP_ENDPOINT`), and OTLP JSON lines appended to `traces_file` (or
    `IOC_TRACES_FILE`), which `ioc trace` reads without any server. With one of them,
    database calls are child spans too unless `trace_db` (or `IOC_TRACE_DB=0`) says no.

    Without an exporter spans are still created, so logs carry trace and span ids
    and the trace context still travels to the next hop.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporters: list[SpanExporter] = [exporter] if exporter is not None else []
    endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    traces_file = traces_file or os.environ.get(TRACES_FILE_ENV) or None
    if traces_file:
        exporters.append(JsonLinesSpanExporter(traces_file))
    global _recording
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    _recording = bool(exporters)
    if trace_db is None:
        trace_db = os.environ.get(TRACE_DB_ENV, "1").lower() not in ("0", "false", "no", "off")
    trace_database_calls(provider if (_recording and trace_db) else None)
    trace.set_tracer_provider(provider)
    return provider


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans as OTLP/JSON lines: one `ExportTraceServiceRequest` per line.

    Ids are hex and enums integers, as the OTLP/JSON encoding wants (protobuf's own JSON
    mapping would write ids in base64). Each line is one `write` on an `O_APPEND`
    descriptor, so several processes can share the file without interleaving lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
        for resource in request.get("resourceSpans", ()):
            for scope in resource.get("scopeSpans", ()):
                for span in scope.get("spans", ()):
                    _hex_ids(span)
                    for link in span.get("links", ()):
                        _hex_ids(link)
        line = json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _hex_ids(item: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if item.get(key):
            item[key] = base64.b64decode(item[key]).hex()


# --- database calls as child spans -------------------------------------------------
# opentelemetry-instrumentation-asyncpg would be the library for this, but its newest
# release (0.66b1) pins opentelemetry-semantic-conventions 0.66b1 while
# opentelemetry-sdk 1.45.2 needs 0.66b2: it cannot be installed beside the SDK in use.
# Until it can, the same few asyncpg methods are wrapped here (the library wraps these).
_DB_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow",
               "copy_records_to_table", "copy_to_table")
_db_tracer: Tracer | None = None
_db_patched = False


def trace_database_calls(provider: TracerProvider | None) -> None:
    """Record each asyncpg query as a child span of the current one; None stops it.

    The wrappers are installed once and cost one global read while switched off.
    """
    global _db_tracer, _db_patched
    _db_tracer = provider.get_tracer("ioc.asyncpg") if provider is not None else None
    if provider is None or _db_patched:
        return
    import asyncpg

    for method in _DB_METHODS:
        original = getattr(asyncpg.Connection, method, None)
        if original is not None:
            setattr(asyncpg.Connection, method, _traced(method, original))
    _db_patched = True


def _traced(method: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    copy = method.startswith("copy_")

    @functools.wraps(original)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer = _db_tracer
        # Only as a child: a query outside any span (pollers, start-up) is not worth a trace.
        if tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return await original(self, *args, **kwargs)
        first = args[0] if args and isinstance(args[0], str) else ""
        if copy:
            name, attributes = "postgresql COPY", {"db.operation.name": "COPY",
                                                  "db.collection.name": first}
        else:
            verb = first.split(None, 1)[0].rstrip(";").upper() if first.strip() else method
            name, attributes = f"postgresql {verb}", {"db.operation.name": verb,
                                                       "db.query.text": first[:2000]}
        attributes["db.system.name"] = "postgresql"
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            return await original(self, *args, **kwargs)

    return call


def inject_trace_headers(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write `traceparent` (and `tracestate`) of the current span into `headers`."""
    propagate.inject(headers, context=context)


def extract_trace_context(headers: Mapping[str, str | bytes] | None) -> Context:
    """The W3C context in `headers`; a value that is not UTF-8 (a sender's garbage) is
    no context at all, never an error: the propagator drops what it cannot parse."""
    carrier = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
               for k, v in (headers or {}).items()}
    return propagate.extract(carrier)


def current_trace_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


# Whether the last `setup_tracing` attached an exporter: spans that go nowhere are not
# worth building on a hot path (see `start_hop`).
_recording = False
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_random = random.Random()


@dataclass(slots=True)
class Hop:
    """One message's step through a service, in the message's trace.

    `headers` is the W3C trace context for what the step emits (a child of the message's
    context); `end()` closes the span, if one is recorded.
    """

    headers: dict[str, str]
    span: Span | None = None

    def end(self) -> None:
        if self.span is not None:
            self.span.end()


def start_hop(tracer: Tracer, name: str, headers: Mapping[str, str], *,
              kind: SpanKind = SpanKind.INTERNAL, links: Sequence[Link] = (),
              attributes: Mapping[str, str | int] | None = None) -> Hop:
    """Continue the trace of an incoming message without making it the current span.

    With an exporter, a real span (child of the message's `traceparent`) is recorded.
    Without one, the SDK would build spans only to drop them: the hop then just carries
    the trace on with a fresh span id, at a tenth of the cost, which matters at
    thousands of messages per second. A missing or malformed `traceparent` starts a trace.
    """
    parent = span_context_of(headers.get("traceparent"))
    if _recording:
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        span = tracer.start_span(name, context=context, kind=kind, links=links,
                                 attributes=attributes)
        out = {"traceparent": traceparent_of(span.get_span_context())}
    else:
        span = None
        if parent is not None:
            trace_id, flags = parent.trace_id, int(parent.trace_flags)
        else:
            trace_id, flags = _random.getrandbits(128) or 1, 1
        out = {"traceparent": f"00-{trace_id:032x}-{_random.getrandbits(64) or 1:016x}-{flags:02x}"}
    if "tracestate" in headers and parent is not None:
        out["tracestate"] = headers["tracestate"]
    return Hop(out, span)


def recording() -> bool:
    """Whether spans go anywhere (an exporter is attached): else hops only carry the trace."""
    return _recording


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The remote span context a W3C `traceparent` names; None if absent or malformed
    (all-zero ids are invalid too)."""
    incoming = _TRACEPARENT.match(traceparent or "")
    if incoming is None or incoming[1] == "0" * 32 or incoming[2] == "0" * 16:
        return None
    return SpanContext(int(incoming[1], 16), int(incoming[2], 16), is_remote=True,
                       trace_flags=TraceFlags(int(incoming[3], 16)))


def context_of(traceparent: str | None) -> Context | None:
    """A context whose current span is the one `traceparent` names (a parent for a new
    span), None if it names none."""
    parent = span_context_of(traceparent)
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None


def traceparent_of(span: SpanContext) -> str:
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"
