"""The province's HTTPS gateway as target, against the simulator process: outage and
catch-up, SIGKILL mid-batch, 429 with Retry-After, a 400 parked, grants changed live,
a dataset shared while running, pause and resume, retention risk."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from ioc_shared.contracts.headers import H_PRODUCER
from ioc_shared.contracts.topics import SYNC_PROVINCE_STATUS, TopicSpec, canonical_topic
from ioc_shared.platform.kafka import declare_topics, make_admin
from ioc_shared.testing import eventually, headers_of, kafka_bootstrap, read_topic
from sync_harness import FIELD_REPORTS, HEALTH_ALERTS, Link, platform_pki

pytestmark = pytest.mark.connected

ALERT = {"reported_at": "2026-12-01T01:00:00+00:00", "commune": "xa-loc-an", "category": "y-te",
         "priority": "cao", "title": "Sốt xuất huyết"}


def _row(status: list[dict], stream: str) -> dict:  # type: ignore[type-arg]
    return next(r for r in status if r["stream"] == stream)


def _order_kept(rows) -> bool:  # type: ignore[no-untyped-def]
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r["source_offset"])
    return all(v == sorted(v) for v in by_key.values())


async def test_http_outage_catch_up_and_sigkill_without_gap_or_duplicate(link: Link) -> None:
    await link.start_service("http")                         # the province is away
    await link.produce(FIELD_REPORTS, 600)

    async def lagging() -> dict | None:  # type: ignore[type-arg]
        row = _row(await link.status(), FIELD_REPORTS)
        return row if row["lag_records"] > 0 and row["unreachable_s"] > 1 else None

    first = await eventually(lagging, what="lag while the province is away")
    await link.produce(FIELD_REPORTS, 400)
    grown = await eventually(lambda: _bigger(link, first["lag_records"]), what="lag growing")
    assert grown > first["lag_records"] and first["failures"].get("network", 0) > 0
    code, health = await link.health()
    assert code == 503 and health["checks"]["province-http"] is False
    events = await read_topic(f"{link.ns}.{SYNC_PROVINCE_STATUS.name}",
                              until=lambda rs: any(orjson.loads(r.value)["payload"]["lag_records"] > 0
                                                   for r in rs), timeout=10)
    assert events, "no status event"
    assert all(headers_of(r).get(H_PRODUCER) == "sync-province" for r in events)

    await link.start_simulator()                             # it comes back
    rows = await link.wait_sim(FIELD_REPORTS, 1000)
    assert len(rows) == 1000 and _order_kept(rows)
    code, health = await link.health()
    assert code == 200, health

    # SIGKILL while a slow province holds a batch, then restart.
    await link.sim_mode(mode="slow", delay=0.3)
    await link.produce(FIELD_REPORTS, 1200)
    await link.wait_sim(FIELD_REPORTS, 1300)
    assert link.service is not None
    link.service.kill()
    await link.sim_mode(mode="ok")
    await link.start_service("http")
    rows = await link.wait_sim(FIELD_REPORTS, 2200)
    await asyncio.sleep(1.0)
    rows = await link.sim_rows(FIELD_REPORTS)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 2200
    assert set(ids) == set(link.sent[FIELD_REPORTS]) and _order_kept(rows)
    record = orjson.loads(rows[0]["value"])["payload"]["record"]
    assert "reporter_phone" not in record and record["title"]
    headers = json.loads(rows[0]["headers"])
    assert headers["ioc-origin-ioc"] == "loc-ninh" and headers["traceparent"].startswith("00-")
    assert headers["ioc-grant-ids"] == "prov-pa-ioc-binh-phuoc"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{link.service.port}/metrics")).text
    assert 'sync_province_records_sent_total{stream="phan-anh-hien-truong",target="http"}' in metrics


async def _bigger(link: Link, than: int) -> int:
    lag = int(_row(await link.status(), FIELD_REPORTS)["lag_records"])
    return lag if lag > than else 0


async def test_http_retry_after_is_honoured_and_a_refused_batch_is_parked(link: Link) -> None:
    await link.start_simulator()
    await link.start_service("http")
    await link.sim_mode(mode="throttle", retry_after=2, times=1)
    await link.produce(FIELD_REPORTS, 30)
    await link.wait_sim(FIELD_REPORTS, 30)
    log = await link.sim_requests()
    throttled = next(r for r in log if r["status"] == 429)
    retried = next(r for r in log if r["key"] == throttled["key"] and r["at"] > throttled["at"])
    assert retried["at"] - throttled["at"] >= 2.0, "Retry-After not honoured"

    await link.sim_mode(mode="reject", reason="schema v9 unknown", times=1)
    batch = await link.produce(FIELD_REPORTS, 10)
    await eventually(lambda: link.pool.fetch(f"SELECT * FROM {link.ns}.failed_sync"), what="parked")
    after = await link.produce(FIELD_REPORTS, 60)
    parked = await link.pool.fetch(f"SELECT * FROM {link.ns}.failed_sync")
    assert len(parked) == 1 and parked[0]["status_code"] == 400
    assert "schema v9 unknown" in parked[0]["answer"]
    refused = set(parked[0]["event_ids"])
    assert refused and refused <= set(batch)
    rows = await link.wait_sim(FIELD_REPORTS, 100 - len(refused))
    got = {r["event_id"] for r in rows}
    assert set(after) | (set(batch) - refused) <= got and not refused & got
    listed = link.cli("parked", "--target", "http")
    assert listed.returncode == 0 and "schema v9 unknown" in listed.stdout

    # Pause a dataset: others go on; resume: it catches up.
    assert link.cli("pause", "--target", "http", "--stream", FIELD_REPORTS).returncode == 0
    await eventually(lambda: _paused(link), what="pause seen")
    held = await link.produce(FIELD_REPORTS, 20)
    await link.produce(HEALTH_ALERTS, 5, record=lambda i: ALERT)
    await link.wait_sim(HEALTH_ALERTS, 5)
    assert not set(held) & {r["event_id"] for r in await link.sim_rows(FIELD_REPORTS)}
    assert link.cli("resume", "--target", "http", "--stream", FIELD_REPORTS).returncode == 0
    rows = await link.wait_sim(FIELD_REPORTS, 120 - len(refused))
    assert set(held) <= {r["event_id"] for r in rows}


async def _paused(link: Link) -> bool:
    return bool(_row(await link.status(), FIELD_REPORTS)["paused"])


async def test_grant_narrowed_then_revoked_while_records_flow(link: Link) -> None:
    await link.start_simulator()
    await link.start_service("http")
    flowing = True

    async def keep_producing() -> None:
        while flowing:
            await link.produce(FIELD_REPORTS, 20)
            await asyncio.sleep(0.05)

    producer = asyncio.create_task(keep_producing())
    await link.wait_sim(FIELD_REPORTS, 100)
    generation = _row(await link.status(), FIELD_REPORTS)["registry_generation"]

    def narrow(raw: dict) -> None:  # type: ignore[type-arg]
        grant = next(g for g in raw["grants"] if g["id"] == "prov-pa-ioc-binh-phuoc")
        grant["fields"] = ["record_id", "title", "commune"]

    link.edit_registry(narrow)
    await eventually(lambda: _generation_above(link, generation), what="registry reload")
    narrowed = await link.produce(FIELD_REPORTS, 40)
    rows = await link.wait_sim(FIELD_REPORTS, 1)
    await eventually(lambda: _all_there(link, narrowed), what="records after narrowing")
    by_id = {r["event_id"]: r for r in await link.sim_rows(FIELD_REPORTS)}
    for event_id in narrowed:
        record = orjson.loads(by_id[event_id]["value"])["payload"]["record"]
        assert set(record) == {"record_id", "title", "commune"}

    generation = _row(await link.status(), FIELD_REPORTS)["registry_generation"]
    link.edit_registry(lambda raw: raw.update(grants=[g for g in raw["grants"]
                                                      if g["id"] != "prov-pa-ioc-binh-phuoc"]))
    await eventually(lambda: _generation_above(link, generation), what="registry reload")
    revoked = await link.produce(FIELD_REPORTS, 40)
    await link.produce(HEALTH_ALERTS, 5, record=lambda i: ALERT)   # proves the link moved past
    await link.wait_sim(HEALTH_ALERTS, 5)
    await asyncio.sleep(1.0)
    flowing = False
    await producer
    rows = await link.sim_rows(FIELD_REPORTS)
    assert not set(revoked) & {r["event_id"] for r in rows}, "records left after the revocation"
    skipped = _row(await link.status(), FIELD_REPORTS)["skipped"]
    assert skipped.get("not-granted", 0) >= 40


async def _generation_above(link: Link, generation: int) -> bool:
    return int(_row(await link.status(), FIELD_REPORTS)["registry_generation"]) > generation


async def _all_there(link: Link, ids: list[str]) -> bool:
    return set(ids) <= {r["event_id"] for r in await link.sim_rows(FIELD_REPORTS)}


async def test_retention_risk_is_alerted_when_the_province_stays_away(link: Link) -> None:
    link.env["SYNC_PROVINCE_RETENTION_MARGIN_S"] = "595"
    await link.produce(FIELD_REPORTS, 50)
    admin = make_admin(kafka_bootstrap(), client_id="test")
    await admin.start()
    try:            # shrink the source topic's retention to 10 minutes
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                  link.topic(FIELD_REPORTS),
                                                  {"retention.ms": "600000"})])
    finally:
        await admin.close()
    # No simulator: the province is away, and the retention risk may make the service
    # unready before a loaded machine has seen it ready.
    await link.start_service("http", healthy=False)

    async def at_risk() -> bool:
        return bool(_row(await link.status(), FIELD_REPORTS)["retention_risk"])

    await eventually(at_risk, timeout=30, what="retention risk")
    code, health = await link.health()
    assert code == 503 and health["checks"]["retention-http"] is False
    assert "ALERT oldest unsynced record is near" in link.service.log_tail(20000)  # type: ignore[union-attr]


async def test_https_gateway_with_a_certificate_from_the_platform_ca(link: Link) -> None:
    pki = platform_pki()
    await link.start_simulator(tls_cert=str(pki / "broker.pem"), tls_key=str(pki / "broker.key"))
    await link.produce(FIELD_REPORTS, 20)
    # Not trusting the platform CA: TLS fails, nothing leaves.
    untrusting = await link.start_service("http", scheme="https")

    async def tls_failing() -> bool:
        return _row(await link.status(), FIELD_REPORTS)["failures"].get("network", 0) > 0

    await eventually(tls_failing, what="TLS refusal")
    assert not await link.sim_rows(FIELD_REPORTS)
    untrusting.kill()
    await link.start_service("http", scheme="https",
                             SYNC_PROVINCE_GATEWAY_CA_FILE=str(pki / "ca.pem"))
    await link.wait_sim(FIELD_REPORTS, 20)


async def test_a_refused_token_is_retried_and_alerted_never_parked(link: Link) -> None:
    await link.start_simulator()
    wrong = link.tmp / "wrong-token"
    wrong.write_text("not-the-province-token")
    refused = await link.start_service("http", SYNC_PROVINCE_GATEWAY_TOKEN_FILE=str(wrong))
    await link.produce(FIELD_REPORTS, 10)

    async def unauthorised() -> bool:
        return _row(await link.status(), FIELD_REPORTS)["failures"].get("http-401", 0) > 1

    await eventually(unauthorised, what="401 retried")
    assert not await link.pool.fetch(f"SELECT * FROM {link.ns}.failed_sync")
    refused.kill()
    await link.start_service("http")
    await link.wait_sim(FIELD_REPORTS, 10)


SCHOOL_ALERTS = "canh-bao-giao-duc"     # not shared with the province in the shipped registry
SCHOOL_ALERT = {"reported_at": "2026-12-01T01:00:00+00:00", "commune": "xa-loc-an",
                "category": "giao-duc", "priority": "cao", "title": "Trường học ngập nước",
                "school": "Trường THCS Lộc An"}


async def test_a_dataset_shared_while_running_reaches_both_targets_from_its_beginning(
        link: Link) -> None:
    await declare_topics(kafka_bootstrap(), [TopicSpec(link.topic(SCHOOL_ALERTS), 6, 3_600_000)])
    before = await link.produce(SCHOOL_ALERTS, 30, record=lambda i: SCHOOL_ALERT)
    await link.start_simulator()
    await link.start_service("kafka,http")
    await link.produce(FIELD_REPORTS, 10)
    await link.wait_sim(FIELD_REPORTS, 10)                   # the link runs
    assert SCHOOL_ALERTS not in {r["stream"] for r in await link.status()}

    def share(raw: dict) -> None:  # type: ignore[type-arg]
        dataset = next(d for d in raw["datasets"] if d["id"] == SCHOOL_ALERTS)
        dataset["shared_with_province"] = True
        raw["grants"].append({"id": "prov-cbgd-ioc-binh-phuoc", "unit": "ioc-binh-phuoc",
                              "dataset": SCHOOL_ALERTS, "actions": ["read"]})

    link.edit_registry(share)

    async def forwarded_by_both() -> bool:
        return {("kafka", SCHOOL_ALERTS), ("http", SCHOOL_ALERTS)} <= {
            (r["target"], r["stream"]) for r in await link.status()}

    await eventually(forwarded_by_both, what="the new stream in both pipelines")
    after = await link.produce(SCHOOL_ALERTS, 20, record=lambda i: SCHOOL_ALERT)
    rows = await link.wait_sim(SCHOOL_ALERTS, 50)
    assert {r["event_id"] for r in rows} == set(before + after)
    assert _order_kept(rows)
    at_province = await link.province_records(canonical_topic(SCHOOL_ALERTS).name, 50, settle=1.0)
    province_ids = [dict(r.headers)["ioc-event-id"].decode() for r in at_province]
    assert sorted(province_ids) == sorted(before + after), "missing or doubled at the Kafka target"

    # The operator's view (`ioc sync status`, the plugin of this service) shows both targets,
    # configured as the running service says, not as the operator's shell guesses.
    assert link.service is not None
    operator_env = {k: v for k, v in link.env.items() if k != "SYNC_PROVINCE_TARGETS"}
    shown = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "ioc"), "sync", "status",
                         "--service-url", f"http://127.0.0.1:{link.service.port}"],
        env=operator_env, capture_output=True, text=True, timeout=90, check=True)
    targets = json.loads(shown.stdout)["targets"]
    for name in ("kafka", "http"):
        assert targets[name]["running"] and targets[name]["configured"], shown.stdout
        assert any(key.startswith(link.topic(SCHOOL_ALERTS)) for key in targets[name]["positions"])
        assert targets[name]["last_shipment"] is not None
        assert SCHOOL_ALERTS in {row["stream"] for row in targets[name]["live"]}

    # The flag taken back stops the dataset at once, as a revoked grant does.
    def unshare(raw: dict) -> None:  # type: ignore[type-arg]
        next(d for d in raw["datasets"] if d["id"] == SCHOOL_ALERTS)["shared_with_province"] = False

    generation = _row(await link.status(), FIELD_REPORTS)["registry_generation"]
    link.edit_registry(unshare)
    await eventually(lambda: _generation_above(link, generation), what="registry reload")
    withheld = await link.produce(SCHOOL_ALERTS, 10, record=lambda i: SCHOOL_ALERT)
    moved_on = await link.produce(FIELD_REPORTS, 5)
    await eventually(lambda: _all_there(link, moved_on), what="records after the flag was taken back")
    assert not set(withheld) & {r["event_id"] for r in await link.sim_rows(SCHOOL_ALERTS)}
