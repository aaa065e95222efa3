"""`start_hop`: a message's trace goes on through a service, recorded or not."""

import pytest
from ioc_shared.platform.telemetry import setup_tracing, start_hop
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def parts(traceparent: str) -> list[str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and len(flags) == 2
    return [trace_id, span_id, flags]


def test_without_exporter_the_trace_goes_on_with_a_new_span_id() -> None:
    tracer = setup_tracing("hop-test").get_tracer("t")
    hop = start_hop(tracer, "svc.step", {"traceparent": INCOMING, "tracestate": "ioc=1"})
    trace_id, span_id, flags = parts(hop.headers["traceparent"])
    assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id not in ("b7ad6b7169203331", "0" * 16)
    assert hop.headers["tracestate"] == "ioc=1"
    assert hop.span is None
    hop.end()


def test_unsampled_parent_stays_unsampled() -> None:
    tracer = setup_tracing("hop-test").get_tracer("t")
    hop = start_hop(tracer, "svc.step", {"traceparent": INCOMING[:-2] + "00"})
    assert parts(hop.headers["traceparent"])[2] == "00"


@pytest.mark.parametrize("headers", [{}, {"traceparent": "garbage"},
                                     {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}])
def test_missing_or_malformed_context_starts_a_trace(headers: dict[str, str]) -> None:
    tracer = setup_tracing("hop-test").get_tracer("t")
    first = parts(start_hop(tracer, "svc.step", headers).headers["traceparent"])
    second = parts(start_hop(tracer, "svc.step", headers).headers["traceparent"])
    assert first[0] != "0" * 32 and first[0] != second[0]
    assert "tracestate" not in start_hop(tracer, "svc.step", {**headers, "tracestate": "x=1"}).headers


def test_with_exporter_the_hop_is_a_recorded_child_span() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing("hop-test", exporter=exporter)
    hop = start_hop(provider.get_tracer("t"), "svc.step", {"traceparent": INCOMING})
    trace_id, span_id, flags = parts(hop.headers["traceparent"])
    hop.end()
    provider.force_flush()
    [span] = exporter.get_finished_spans()
    assert span.name == "svc.step"
    assert format(span.context.trace_id, "032x") == trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert format(span.context.span_id, "016x") == span_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert flags == "01"
    setup_tracing("hop-test")  # back to no exporter for the other tests
