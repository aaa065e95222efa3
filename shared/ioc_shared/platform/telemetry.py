"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer


def setup_tracing(service_name: str, otlp_endpoint: str | None = None,
                  exporter: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider for the service: OTLP export when configured, none otherwise.

    Without an exporter spans are still created, so logs carry trace and span ids
    and the trace context still travels to the next hop.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
    global _recording
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _recording = exporter is not None
    trace.set_tracer_provider(provider)
    return provider


def inject_trace_headers(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write `traceparent` (and `tracestate`) of the current span into `headers`."""
    propagate.inject(headers, context=context)


def extract_trace_context(headers: Mapping[str, str | bytes] | None) -> Context:
    carrier = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (headers or {}).items()}
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


def start_hop(tracer: Tracer, name: str, headers: Mapping[str, str]) -> Hop:
    """Continue the trace of an incoming message without making it the current span.

    With an exporter, a real span (child of the message's `traceparent`) is recorded.
    Without one, the SDK would build spans only to drop them: the hop then just carries
    the trace on with a fresh span id, at a tenth of the cost, which matters at
    thousands of messages per second. A missing or malformed `traceparent` starts a trace.
    """
    incoming = _TRACEPARENT.match(headers.get("traceparent", ""))
    if incoming is not None and (incoming[1] == "0" * 32 or incoming[2] == "0" * 16):
        incoming = None  # all-zero ids are invalid (W3C trace context)
    if _recording:
        context = None
        if incoming is not None:
            parent = SpanContext(int(incoming[1], 16), int(incoming[2], 16), is_remote=True,
                                 trace_flags=TraceFlags(int(incoming[3], 16)))
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        span = tracer.start_span(name, context=context)
        own = span.get_span_context()
        out = {"traceparent": f"00-{own.trace_id:032x}-{own.span_id:016x}-{own.trace_flags:02x}"}
    else:
        span = None
        if incoming is not None:
            trace_id, flags = incoming[1], incoming[3]
        else:
            trace_id, flags = f"{_random.getrandbits(128) or 1:032x}", "01"
        out = {"traceparent": f"00-{trace_id}-{_random.getrandbits(64) or 1:016x}-{flags}"}
    if "tracestate" in headers and incoming is not None:
        out["tracestate"] = headers["tracestate"]
    return Hop(out, span)
