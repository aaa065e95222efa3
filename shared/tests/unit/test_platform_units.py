import json
import logging

import pytest
from ioc_shared.contracts import TopicSpec, canonical_topic, special_topic
from ioc_shared.contracts.topics import TOPICS
from ioc_shared.platform.logging import configure_logging, get_logger
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.platform.telemetry import extract_trace_context, inject_trace_headers, setup_tracing
from opentelemetry import trace


class IngestLikeSettings(ServiceSettings):
    service_prefix = "INGEST_"


def test_service_prefix_overrides_common_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_KAFKA_BOOTSTRAP", "common:1")
    monkeypatch.setenv("IOC_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("INGEST_KAFKA_BOOTSTRAP", "own:2")
    s = IngestLikeSettings()
    assert s.kafka_bootstrap == "own:2"
    assert s.log_level == "DEBUG"
    assert ServiceSettings().kafka_bootstrap == "common:1"


def test_topic_namespace_renames_without_changing_the_rest() -> None:
    spec = canonical_topic("phan-anh-hien-truong")
    assert ServiceSettings(topic_namespace="").topic(spec) is spec
    named = ServiceSettings(topic_namespace="t1").topic(spec)
    assert named.name == "t1.ioc.data.phan-anh-hien-truong.v1"
    assert (named.partitions, named.retention_ms) == (spec.partitions, spec.retention_ms)


def test_topic_catalogue_is_explicit_and_unique() -> None:
    names = [t.name for t in TOPICS]
    assert len(names) == len(set(names))
    for t in TOPICS:
        assert t.partitions >= 1 and t.retention_ms > 0
        assert t.config()["cleanup.policy"] in {"delete", "compact,delete"}
    name = special_topic("cong-an-huyen", "Phản ánh", "sr-1").name
    assert name == "ioc.share.cong-an-huyen.phan-anh.sr-1.v1"
    assert TopicSpec("x", 1, 1, compacted=True).config()["cleanup.policy"] == "compact,delete"


def test_json_logs_carry_trace_ids_and_mask_personal_data(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test-svc", "INFO")
    provider = setup_tracing("test-svc")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("handle") as span:
        get_logger("t").info("record accepted", reporter_phone="+84912345678", unit="xa-loc-an",
                             title="Đường hư hỏng")
        ctx = span.get_span_context()
    logging.getLogger("aiokafka").warning("library line")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    ours = next(line for line in lines if line["event"] == "record accepted")
    assert ours["trace_id"] == format(ctx.trace_id, "032x")
    assert ours["span_id"] == format(ctx.span_id, "016x")
    assert ours["reporter_phone"] == "[redacted]"
    assert ours["unit"] == "xa-loc-an" and ours["title"] == "Đường hư hỏng"
    assert ours["service"] == "test-svc"
    assert any(line["event"] == "library line" for line in lines)  # stdlib loggers are JSON too


def test_trace_context_round_trips_through_headers() -> None:
    provider = setup_tracing("test-svc")
    tracer = provider.get_tracer("t")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("produce") as span:
        inject_trace_headers(headers)
        sent = span.get_span_context()
    assert headers["traceparent"].split("-")[1] == format(sent.trace_id, "032x")
    ctx = extract_trace_context({k: v.encode() for k, v in headers.items()})
    with tracer.start_as_current_span("consume", context=ctx) as child:
        assert child.get_span_context().trace_id == sent.trace_id
    assert trace.get_current_span().get_span_context().is_valid is False


def test_trace_headers_that_are_not_utf8_are_no_context_not_an_error() -> None:
    # A hostile sender's bytes (NUL, invalid UTF-8, an encoded lone surrogate).
    ctx = extract_trace_context({"traceparent": b"00-\x00\xff\xfe-\xed\xa0\x80",
                                 "tracestate": b"\x00" * 70_000})
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_murmur2_matches_aiokafkas() -> None:
    import random

    from aiokafka.partitioner import murmur2 as reference
    from ioc_shared.platform.kafka import murmur2

    rng = random.Random(7)
    samples = [b"", b"a", b"ab", b"abc", b"abcd", "Lộc Ninh".encode(), bytes(range(256))]
    samples += [rng.randbytes(rng.randrange(0, 80)) for _ in range(2000)]
    for data in samples:
        assert murmur2(data) == reference(data), data
