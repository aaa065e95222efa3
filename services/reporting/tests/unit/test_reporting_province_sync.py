"""Records sent to the province from status snapshots: differences, restarts, no double
counting, days in Asia/Ho_Chi_Minh, the section of the report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from reporting.contract import figures_json_schema
from reporting.domain import province_sync as ps
from reporting.domain.document import build_document
from reporting_examples import figures

T0 = datetime(2026, 11, 12, 16, 50, tzinfo=UTC)       # 23:50 on 12 November, local


def snap(sent: int, positions: dict[str, int], *, at: datetime, stream: str = "chi-so-y-te",
         target: str = "kafka", parked: int = 0, failures: dict[str, int] | None = None,
         synced: datetime | None = None) -> ps.Snapshot:
    payload: dict[str, Any] = {
        "stream": stream, "target": target, "sent": sent, "parked": parked,
        "positions": positions, "skipped": {"not-granted": 1},
        "failures": failures or {}, "lag_records": 0,
        "last_synced_at": (synced or at).timestamp()}
    return ps.snapshot_of(payload, at)


def totals(rollup: ps.Rollup) -> dict[tuple[date, str, str], int]:
    return {k: d.sent for k, d in rollup.days.items()}


def test_sent_is_the_difference_of_consecutive_snapshots_on_their_local_day() -> None:
    snaps = [snap(10, {"t:0": 12}, at=T0), snap(25, {"t:0": 30}, at=T0 + timedelta(minutes=15)),
             snap(40, {"t:0": 50}, at=T0 + timedelta(minutes=25))]
    out = ps.fold({}, snaps)
    # The first snapshot counts what the process sent since it started (10), on the 12th
    # (23:50 local); the next two are after midnight local: 13 November.
    assert totals(out) == {(date(2026, 11, 12), "kafka", "chi-so-y-te"): 10,
                           (date(2026, 11, 13), "kafka", "chi-so-y-te"): 30}
    assert out.baselines[("kafka", "chi-so-y-te")].counters["sent"] == 40


def test_any_order_and_a_replayed_snapshot_count_once() -> None:
    snaps = [snap(10, {"t:0": 12}, at=T0), snap(25, {"t:0": 30}, at=T0 + timedelta(minutes=5)),
             snap(40, {"t:0": 50}, at=T0 + timedelta(minutes=15))]
    in_one = ps.fold({}, list(reversed(snaps)))
    assert sum(totals(in_one).values()) == 40
    # Applied one by one over the stored baselines, with the middle one arriving again late.
    stored: dict[tuple[str, str], ps.Baseline] = {}
    total = 0
    for s in (snaps[0], snaps[2], snaps[1], snaps[1]):
        out = ps.fold(stored, [s])
        stored.update(out.baselines)
        total += sum(totals(out).values())
    assert total == 40


def test_a_restart_counts_from_zero_and_positions_bound_the_count() -> None:
    stored = ps.fold({}, [snap(100, {"t:0": 100}, at=T0)]).baselines
    # The process restarted (sent went down): its 30 count, not a negative difference.
    out = ps.fold(stored, [snap(30, {"t:0": 140}, at=T0 + timedelta(minutes=1))])
    assert sum(totals(out).values()) == 30
    # Two processes reporting alternately (their counters jump up and down) never count
    # more than the positions moved past their highest.
    stored = ps.fold({}, [snap(100, {"t:0": 100}, at=T0)]).baselines
    out = ps.fold(stored, [snap(5, {"t:0": 60}, at=T0 + timedelta(minutes=1)),
                           snap(101, {"t:0": 101}, at=T0 + timedelta(minutes=2)),
                           snap(6, {"t:0": 61}, at=T0 + timedelta(minutes=3))])
    assert sum(totals(out).values()) == 1


def test_failures_count_once_per_target_and_parked_per_stream() -> None:
    at = T0 + timedelta(hours=1)
    snaps = [snap(1, {"a:0": 1}, at=at, stream="a", failures={"network": 2}, parked=1),
             snap(1, {"b:0": 1}, at=at, stream="b", failures={"network": 2}),
             snap(2, {"a:0": 2}, at=at + timedelta(seconds=10), stream="a",
                  failures={"network": 3, "http-503": 1}, parked=1),
             snap(2, {"b:0": 2}, at=at + timedelta(seconds=10), stream="b",
                  failures={"network": 3, "http-503": 1})]
    out = ps.fold({}, snaps)
    assert out.failures == {(date(2026, 11, 13), "kafka", "network"): 3,
                            (date(2026, 11, 13), "kafka", "http-503"): 1}
    assert out.days[(date(2026, 11, 13), "kafka", "a")].parked == 1


@pytest.mark.parametrize("payload", [
    {"target": "kafka"}, {"stream": "s", "target": "kafka", "sent": -1},
    {"stream": "s", "target": "kafka", "sent": "12"},
    {"stream": "s", "target": "kafka", "positions": {"t:0": 1.5}},
    {"stream": "s", "target": "kafka", "last_synced_at": "yesterday"}])
def test_a_malformed_snapshot_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(ps.StatusError):
        ps.snapshot_of(payload, T0)


def sync_rows() -> list[dict[str, Any]] | None:
    synced = datetime(2026, 11, 13, 7, 5, tzinfo=UTC)
    return ps.province_sync_figures(
        [("chi-so-y-te", "kafka", 1234, 1, synced)], [("kafka", "network", 3), ("kafka", "x", 0)],
        ["chi-so-y-te", "phan-anh-hien-truong"],
        {"chi-so-y-te": "Chỉ số y tế", "phan-anh-hien-truong": "Phản ánh hiện trường"}.get)


def test_the_section_shows_the_figures_and_says_when_there_are_none() -> None:
    rows = sync_rows()
    assert rows == [
        {"dataset": "chi-so-y-te", "dataset_name": "Chỉ số y tế", "target": "kafka",
         "sent": 1234, "parked": 1, "last_synced_at": "2026-11-13T07:05:00+00:00",
         "failures": {"network": 3}},
        {"dataset": "phan-anh-hien-truong", "dataset_name": "Phản ánh hiện trường",
         "target": None, "sent": None, "parked": None, "last_synced_at": None, "failures": {}}]
    assert ps.province_sync_figures([], [], ["chi-so-y-te"], str) is None
    f = figures(province_sync=rows)
    jsonschema.validate({**f}, figures_json_schema())
    doc = build_document(f, parent_body="UBND", issuing_body="VĂN PHÒNG", place="Lộc Ninh",
                         number_suffix="BC-IOC", subject="Báo cáo", recipients=[],
                         signer=("", "", ""), number_text=None, issued_on=None,
                         today=date(2026, 11, 20))
    section = next(s for s in doc.sections if s.number == "III")
    text = " ".join(section.paragraphs)
    assert "đã gửi 1.234 bản ghi trong kỳ" in text and "Kafka của tỉnh: mất kết nối 3 lượt" in text
    table = next(t for t in section.tables if t.title.startswith("3."))
    assert table.rows[0][:5] == ("Chỉ số y tế", "Kafka của tỉnh", 1234, 1, "14:05 ngày 13/11/2026")
    assert table.rows[1][2] == "chưa có số liệu"
    assert table.total is not None and table.total[2] == 1234
    empty = build_document(figures(), parent_body="UBND", issuing_body="VĂN PHÒNG",
                           place="Lộc Ninh", number_suffix="BC-IOC", subject="Báo cáo",
                           recipients=[], signer=("", "", ""), number_text=None, issued_on=None,
                           today=date(2026, 11, 20))
    assert "Dữ liệu đồng bộ lên Trung tâm IOC tỉnh: chưa có số liệu." in next(
        s for s in empty.sections if s.number == "III").paragraphs
