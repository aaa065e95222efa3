"""`ioc trace`: the span tree of one trace from a traces file written by `setup_tracing`."""

import json
from pathlib import Path

import pytest
from ioc_cli.app import app
from ioc_cli.errors import OperatorError
from ioc_cli.traces import build_tree, read_spans
from ioc_shared.platform.telemetry import setup_tracing, start_hop
from opentelemetry.trace import StatusCode
from typer.testing import CliRunner

SENDER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def traces_file(tmp_path: Path) -> Path:
    """Two services' spans of one trace (ingest's record, routing's intake with an error and a
    database child) and one span of another trace, in one file as two processes would write it."""
    path = tmp_path / "traces.jsonl"
    for service in ("ingest", "routing"):
        provider = setup_tracing(service, traces_file=path, trace_db=False)
        tracer = provider.get_tracer(service)
        if service == "ingest":
            hop = start_hop(tracer, "ingest record", {"traceparent": SENDER})
            assert hop.span is not None
            hop.span.set_attributes({"messaging.destination.name": "ioc.data.x.v1",
                                     "messaging.kafka.message.offset": 7, "ioc.event_id": "e-1"})
            hop.end()
            (tmp_path / "next").write_text(hop.headers["traceparent"], encoding="utf-8")
            tracer.start_span("unrelated").end()
        else:
            hop = start_hop(tracer, "routing.intake",
                            {"traceparent": (tmp_path / "next").read_text(encoding="utf-8")})
            assert hop.span is not None
            with tracer.start_as_current_span("postgresql INSERT",
                                              context=_context(hop.span)):
                pass
            hop.span.set_status(StatusCode.ERROR, "unknown commune")
            hop.end()
        provider.force_flush()
    setup_tracing("ioc-tests")  # no exporter for the other tests
    return path


def _context(span):  # type: ignore[no-untyped-def]
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def test_the_tree_follows_the_hops_across_services(traces_file: Path) -> None:
    spans = read_spans(traces_file, TRACE_ID)
    assert sorted(s.name for s in spans) == ["ingest record", "postgresql INSERT", "routing.intake"]
    [root] = build_tree(spans)  # the sender's span is not in the file: ingest's is the root
    assert (root.service, root.name, root.parent_id) == ("ingest", "ingest record", "00f067aa0ba902b7")
    [intake] = root.children
    assert (intake.service, intake.status, intake.status_message) == ("routing", "error", "unknown commune")
    assert [c.name for c in intake.children] == ["postgresql INSERT"]
    assert root.attributes["messaging.kafka.message.offset"] == 7


def test_the_command_prints_the_tree_and_json(traces_file: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["trace", TRACE_ID, "--file", str(traces_file)])
    assert shown.exit_code == 0, shown.output
    for text in ("ingest", "ingest record", "routing.intake", "ERROR", "unknown commune",
                 "offset=7", "event_id=e-1", "topic=ioc.data.x.v1"):
        assert text in shown.output
    as_json = runner.invoke(app, ["trace", TRACE_ID.upper(), "--file", str(traces_file), "--json"])
    data = json.loads(as_json.output)
    assert data["spans"] == 3
    assert data["roots"][0]["children"][0]["children"][0]["name"] == "postgresql INSERT"


def test_a_missing_file_or_trace_is_an_operator_error(tmp_path: Path, traces_file: Path) -> None:
    with pytest.raises(OperatorError) as missing:
        read_spans(tmp_path / "nowhere.jsonl", TRACE_ID)
    assert "IOC_TRACES_FILE" in missing.value.hint
    result = CliRunner().invoke(app, ["trace", "0" * 32, "--file", str(traces_file)])
    assert isinstance(result.exception, OperatorError)
    assert "no span of trace" in result.exception.what


def test_a_line_cut_mid_write_is_skipped(traces_file: Path) -> None:
    with traces_file.open("a", encoding="utf-8") as f:
        f.write('{"resourceSpans": [{"traceId": "' + TRACE_ID + '"\n')
    assert len(read_spans(traces_file, TRACE_ID)) == 3
