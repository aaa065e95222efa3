"""Database calls are child spans of the span they run in, written to `IOC_TRACES_FILE`."""

import json
from pathlib import Path

import asyncpg
import pytest
from ioc_shared.platform.telemetry import setup_tracing
from ioc_shared.testing import database_url

pytestmark = pytest.mark.connected


async def test_an_asyncpg_query_inside_a_span_is_its_child_in_the_traces_file(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = setup_tracing("db-trace-test", traces_file=path)
    try:
        conn = await asyncpg.connect(database_url())
        try:
            with provider.get_tracer("t").start_as_current_span("handler") as parent:
                assert await conn.fetchval("SELECT 41 + $1::int", 1) == 42
            outside = await conn.fetchval("SELECT 1")  # no current span: not recorded
            assert outside == 1
        finally:
            await conn.close()
        provider.force_flush()
    finally:
        setup_tracing("db-trace-test")  # exporter and database spans off again
    spans = [s for line in path.read_text(encoding="utf-8").splitlines()
             for r in json.loads(line)["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
    parent_id = format(parent.get_span_context().span_id, "016x")
    [query] = [s for s in spans if s.get("parentSpanId") == parent_id]
    assert query["name"] == "postgresql SELECT"
    assert query["kind"] == 3  # CLIENT
    attrs = {a["key"]: a["value"].get("stringValue") for a in query["attributes"]}
    assert attrs["db.system.name"] == "postgresql"
    assert attrs["db.query.text"] == "SELECT 41 + $1::int"
    assert query["traceId"] == format(parent.get_span_context().trace_id, "032x")


async def test_database_spans_can_be_switched_off() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = setup_tracing("db-trace-test", exporter=exporter, trace_db=False)
    try:
        conn = await asyncpg.connect(database_url())
        try:
            with provider.get_tracer("t").start_as_current_span("handler"):
                await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        provider.force_flush()
    finally:
        setup_tracing("db-trace-test")
    assert [s.name for s in exporter.get_finished_spans()] == ["handler"]


async def test_queries_outside_any_span_and_copies_are_recorded_as_they_should(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    provider = setup_tracing("db-trace-test", traces_file=path)
    try:
        conn = await asyncpg.connect(database_url())
        try:
            await conn.fetchval("SELECT 1")  # a poller's query: no span of its own
            with provider.get_tracer("t").start_as_current_span("batch"):
                await conn.execute("CREATE TEMP TABLE t_copy (n int)")
                await conn.copy_records_to_table("t_copy", records=[(1,), (2,)])
        finally:
            await conn.close()
        provider.force_flush()
    finally:
        setup_tracing("db-trace-test")
    spans = [s for line in path.read_text(encoding="utf-8").splitlines()
             for r in json.loads(line)["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
    assert sorted(s["name"] for s in spans) == ["batch", "postgresql COPY", "postgresql CREATE"]
    [copy] = [s for s in spans if s["name"] == "postgresql COPY"]
    assert {"key": "db.collection.name", "value": {"stringValue": "t_copy"}} in copy["attributes"]
