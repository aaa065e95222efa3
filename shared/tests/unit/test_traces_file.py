"""`IOC_TRACES_FILE`: finished spans as OTLP/JSON lines that `ioc trace` reads back."""

import json
from pathlib import Path
from typing import Any

import pytest
from ioc_shared.platform.telemetry import JsonLinesSpanExporter, setup_tracing, start_hop
from opentelemetry.trace import StatusCode

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def spans_in(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(service name, span) of every span of every line."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        for resource in request["resourceSpans"]:
            attrs = {a["key"]: a["value"] for a in resource["resource"]["attributes"]}
            for scope in resource["scopeSpans"]:
                found.extend((attrs["service.name"]["stringValue"], s) for s in scope["spans"])
    return found


def test_spans_are_written_as_otlp_json_lines_with_hex_ids(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = setup_tracing("file-test", traces_file=path, trace_db=False)
    try:
        tracer = provider.get_tracer("t")
        hop = start_hop(tracer, "svc.step", {"traceparent": INCOMING})
        assert hop.span is not None
        hop.span.set_attribute("messaging.kafka.offset", 42)
        hop.span.set_status(StatusCode.ERROR, "boom")
        hop.end()
        provider.force_flush()
        [(service, span)] = spans_in(path)
    finally:
        setup_tracing("file-test")  # back to no exporter for the other tests
    assert service == "file-test"
    assert span["name"] == "svc.step"
    assert span["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["parentSpanId"] == "b7ad6b7169203331"
    assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
    assert span["status"] == {"code": 2, "message": "boom"}
    assert {"key": "messaging.kafka.offset", "value": {"intValue": "42"}} in span["attributes"]
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"])


def test_each_export_appends_one_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text('{"resourceSpans": []}\n', encoding="utf-8")  # another process wrote first
    provider = setup_tracing("file-test", traces_file=path, trace_db=False)
    try:
        for name in ("one", "two"):
            provider.get_tracer("t").start_span(name).end()
            provider.force_flush()
    finally:
        setup_tracing("file-test")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert [s["name"] for _, s in spans_in(path)] == ["one", "two"]


def test_the_file_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env" / "traces.jsonl"
    monkeypatch.setenv("IOC_TRACES_FILE", str(path))
    provider = setup_tracing("file-test", trace_db=False)
    monkeypatch.delenv("IOC_TRACES_FILE")
    try:
        provider.get_tracer("t").start_span("from-env").end()
        provider.force_flush()
    finally:
        setup_tracing("file-test")
    assert [s["name"] for _, s in spans_in(path)] == ["from-env"]


def test_an_unwritable_file_fails_the_export_not_the_service(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    exporter = JsonLinesSpanExporter(blocker / "traces.jsonl")  # parent is a file
    provider = setup_tracing("file-test", exporter=exporter, trace_db=False)
    try:
        span = provider.get_tracer("t").start_span("lost")
        span.end()
        from opentelemetry.sdk.trace.export import SpanExportResult
        assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    finally:
        setup_tracing("file-test")
