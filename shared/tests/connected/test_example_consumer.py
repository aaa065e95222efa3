"""examples/consumer.py, run briefly against the real broker on a canonical topic."""

import ast
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from ioc_shared.contracts import Envelope, canonical_topic
from ioc_shared.platform.kafka import declare_topics, make_admin, make_producer
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.testing import (
    delete_province_topics,
    delete_topics_under,
    kafka_bootstrap,
    province_security,
    unique,
)

pytestmark = pytest.mark.connected
EXAMPLE = REPO_ROOT / "examples" / "consumer.py"
SCHEMA = REPO_ROOT / "docs" / "contracts" / "released" / "ioc.data.phan-anh-hien-truong" \
    / "ingest.record.accepted.json"


def accepted(record_id: str, **record: Any) -> Envelope:
    return Envelope(type="ingest.record.accepted", source_unit="tt-loc-ninh", subject=record_id,
                    schema_version=2, payload={
                        "dataset": "phan-anh-hien-truong", "schema_version": 2,
                        "source_schema_version": 2, "record_id": record_id, "client_event_id": None,
                        "record": {"record_id": record_id, "reported_at": "2026-12-01T01:00:00Z",
                                   "commune": "xa-loc-an", "category": "moi-truong",
                                   "priority": "binh-thuong", "channel": "ung-dung",
                                   "title": "Rác thải", **record},
                        "provenance": {"principal": "tt-loc-ninh-system", "channel": "kafka",
                                       "origin": "t/0/1", "content_hash": "ab"}})


async def run_example(topic: str, group: str, state: Path, *options: str,
                      bootstrap: str | None = None) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--topic", topic, "--schema", str(SCHEMA), "--group", group,
        "--bootstrap", bootstrap or kafka_bootstrap(), "--state", str(state), "--idle-seconds", "3",
        *options, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()


async def test_the_example_consumer_validates_dedupes_skips_aborted_and_commits(tmp_path: Path) -> None:
    tag = unique("t_example")
    topic = f"{tag.replace('_', '-')}.{canonical_topic('phan-anh-hien-truong').name}"
    group = f"{tag}-dashboard"
    spec = dataclasses.replace(canonical_topic("phan-anh-hien-truong"), name=topic, partitions=2)
    await declare_topics(kafka_bootstrap(), [spec])
    first, second = accepted("PA-1"), accepted("PA-2", location={"lat": 11.8, "lon": 106.6})
    wrong = accepted("PA-3").model_copy(update={"payload": {"dataset": "phan-anh-hien-truong"}})
    producer = make_producer(kafka_bootstrap(), client_id="test", acks="all")
    aborted = make_producer(kafka_bootstrap(), client_id="test", transactional_id=f"{tag}-tx")
    await producer.start()
    await aborted.start()
    try:
        for env in (first, second, first, wrong):  # `first` twice: a redelivery
            await producer.send_and_wait(topic, env.to_bytes(), key=env.key)
        await producer.send_and_wait(topic, b"\xff not json", key=b"PA-4")
        await aborted.begin_transaction()
        await aborted.send(topic, accepted("PA-ABORTED").to_bytes(), key=b"PA-ABORTED")
        await aborted.abort_transaction()
        await producer.send_and_wait(topic, accepted("PA-5").to_bytes(), key=b"PA-5")

        code, lines, err = await run_example(topic, group, tmp_path / "state.sqlite")
        assert code == 0, err
        handled = [line["subject"] for line in lines if "handled" in line]
        assert sorted(handled) == ["PA-1", "PA-2", "PA-5"]  # never PA-ABORTED
        assert lines[-1] == {"summary": {"handled": 3, "duplicates": 1, "invalid": 2}}
        assert "Traceback" not in err and err.count('"invalid"') == 2

        # Offsets were committed: a second run (same group, same state) has nothing to do.
        code, lines, err = await run_example(topic, group, tmp_path / "state.sqlite")
        assert code == 0, err
        assert lines == [{"summary": {"handled": 0, "duplicates": 0, "invalid": 0}}]
        admin = make_admin(kafka_bootstrap(), client_id="test")
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert sum(o.offset for o in committed.values()) >= 7  # past every message and marker
    finally:
        await producer.stop()
        await aborted.stop()
        await delete_topics_under([tag])


@pytest.mark.skipif(not os.environ.get("IOC_PROVINCE_KAFKA_BOOTSTRAP"),
                    reason="the platform's SASL_SSL broker is not configured")
async def test_the_example_consumer_reads_a_sasl_ssl_cluster_with_its_credentials(
        tmp_path: Path) -> None:
    """The local SASL_SSL broker stands in for a secured district cluster."""
    tag = unique("t_example_sasl").replace("_", "-")
    topic = f"{tag}.{canonical_topic('phan-anh-hien-truong').name}"
    bootstrap, security = os.environ["IOC_PROVINCE_KAFKA_BOOTSTRAP"], province_security()
    admin = make_admin(bootstrap, client_id="test", security=security)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = make_producer(bootstrap, client_id="test", acks="all", security=security)
    await producer.start()
    try:
        await producer.send_and_wait(topic, accepted("PA-1").to_bytes(), key=b"PA-1")
        credentials = ("--security-protocol", "SASL_SSL", "--sasl-user", str(security.sasl_user),
                       "--sasl-password-file", str(security.sasl_password_file),
                       "--ca-file", str(security.ca_file))
        code, lines, err = await run_example(topic, f"{tag}-dashboard", tmp_path / "s.sqlite",
                                             *credentials, bootstrap=bootstrap)
        assert code == 0, err
        assert lines[-1] == {"summary": {"handled": 1, "duplicates": 0, "invalid": 0}}
        # Without the credentials the secured cluster gives nothing (and the example says so).
        code, lines, err = await run_example(topic, f"{tag}-other", tmp_path / "t.sqlite",
                                             bootstrap=bootstrap)
        assert not any("handled" in line for line in lines)
    finally:
        await producer.stop()
        await delete_province_topics(tag)


def test_the_example_needs_only_aiokafka_jsonschema_and_the_standard_library() -> None:
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    imported = {(node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names}
    assert imported - sys.stdlib_module_names == {"aiokafka", "jsonschema"}
