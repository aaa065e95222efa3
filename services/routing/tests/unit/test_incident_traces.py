"""Work on an incident (a command's decision, a timer) joins the incident's trace."""

from __future__ import annotations

from ioc_shared.platform.telemetry import setup_tracing
from ioc_shared.testing import recorded_spans
from opentelemetry import trace
from routing.handlers import in_trace_of

INCIDENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_span_is_a_child_of_the_incidents_trace_linked_to_what_started_it() -> None:
    with (recorded_spans("routing-test") as exporter,
          trace.get_tracer("t").start_as_current_span("routing.command") as command):
        with in_trace_of("routing.command verify", INCIDENT, {"ioc.incident_id": "i-1"}):
            inside = trace.get_current_span().get_span_context()
        assert trace.get_current_span() is command   # back in the command's own trace
    [decided] = [s for s in exporter.get_finished_spans() if s.name == "routing.command verify"]
    assert decided.context == inside
    assert format(decided.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert decided.parent is not None and format(decided.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert [link.context for link in decided.links] == [command.get_span_context()]
    assert decided.attributes == {"ioc.incident_id": "i-1"}


def test_without_a_stored_trace_the_current_span_goes_on() -> None:
    tracer = setup_tracing("routing-test").get_tracer("t")
    with tracer.start_as_current_span("routing.command") as command:
        for stored in (None, "not a traceparent"):
            with in_trace_of("routing.command verify", stored):
                assert trace.get_current_span() is command
