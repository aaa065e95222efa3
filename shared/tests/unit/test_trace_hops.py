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


def test_a_recorded_hop_has_its_kind_links_and_attributes() -> None:
    from ioc_shared.platform.telemetry import span_context_of
    from opentelemetry.trace import Link, SpanKind

    exporter = InMemorySpanExporter()
    provider = setup_tracing("hop-test", exporter=exporter)
    other = span_context_of("00-11111111111111111111111111111111-2222222222222222-01")
    assert other is not None
    start_hop(provider.get_tracer("t"), "topic publish", {"traceparent": INCOMING},
              kind=SpanKind.PRODUCER, links=[Link(other)], attributes={"ioc.event_id": "e"}).end()
    provider.force_flush()
    setup_tracing("hop-test")
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER and span.attributes == {"ioc.event_id": "e"}
    assert [link.context.span_id for link in span.links] == [0x2222222222222222]


@pytest.mark.parametrize("traceparent", [None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01",
                                         "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01"])
def test_no_context_from_a_missing_or_invalid_traceparent(traceparent: str | None) -> None:
    from ioc_shared.platform.telemetry import context_of, span_context_of

    assert span_context_of(traceparent) is None and context_of(traceparent) is None


def test_a_traceparent_read_and_written_back_is_the_same() -> None:
    from ioc_shared.platform.telemetry import context_of, span_context_of, traceparent_of
    from opentelemetry import trace

    parent = span_context_of(INCOMING)
    assert parent is not None and parent.is_remote
    assert traceparent_of(parent) == INCOMING
    context = context_of(INCOMING)
    assert context is not None
    assert trace.get_current_span(context).get_span_context() == parent


def test_recording_says_whether_an_exporter_is_attached() -> None:
    from ioc_shared.platform.telemetry import recording

    setup_tracing("hop-test", exporter=InMemorySpanExporter())
    assert recording()
    setup_tracing("hop-test")
    assert not recording()
