"""What leaves for the province continues the record's trace, through a span of its own."""

from __future__ import annotations

from ioc_shared.platform.telemetry import setup_tracing
from ioc_shared.testing import recorded_spans
from sync_province.domain import Outgoing
from sync_province.targets import Forwarding

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def outgoing(headers: tuple[tuple[str, bytes], ...]) -> Outgoing:
    return Outgoing("field-reports", "0190a3c2-0000-7000-8000-000000000001", b"k", b"{}",
                    headers, 0, "ioc.data.x", 0, 7)


def test_a_record_leaves_with_the_context_of_its_publish_span() -> None:
    given = (("ioc-event-id", b"e"), ("traceparent", f"00-{TRACE_ID}-{PARENT}-01".encode()),
             ("tracestate", b"ioc=1"))
    with recorded_spans("sync-test") as spans:
        forwarding = Forwarding()
        headers = dict(forwarding.headers(outgoing(given), "loc-ninh.field-reports"))
        forwarding.end()
    [span] = spans.get_finished_spans()
    assert span.name == "loc-ninh.field-reports publish"
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert headers["traceparent"].decode() == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert headers["tracestate"] == b"ioc=1" and headers["ioc-event-id"] == b"e"


def test_without_an_exporter_headers_leave_as_they_came() -> None:
    setup_tracing("sync-test")
    given = (("traceparent", f"00-{TRACE_ID}-{PARENT}-01".encode()),)
    assert Forwarding().headers(outgoing(given), "t") == list(given)
