"""The Decree 30 document model, report commands and the configuration."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import date

import pytest
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import load_registry
from reporting.config import ReportingConfigError, load_config, parse_config
from reporting.domain.document import build_document
from reporting.domain.lifecycle import (
    Command,
    Reason,
    Rejection,
    Status,
    Verb,
    authorise,
    document_number,
    parse_command,
    transition,
)
from reporting_examples import figures

REGISTRY = load_registry(REPO_ROOT / "config" / "registry.yaml", None)


def doc(number: str | None = None):  # type: ignore[no-untyped-def]
    return build_document(figures(), parent_body="UBND HUYỆN LỘC NINH",
                          issuing_body="VĂN PHÒNG HĐND VÀ UBND", place="Lộc Ninh",
                          number_suffix="BC-IOC", subject="Tình hình hoạt động Trung tâm IOC",
                          recipients=["UBND huyện (b/c)", "Sở Thông tin và Truyền thông"],
                          signer=("KT. CHÁNH VĂN PHÒNG", "PHÓ CHÁNH VĂN PHÒNG", "Nguyễn Văn A"),
                          number_text=number, issued_on=date(2026, 11, 5) if number else None,
                          today=date(2026, 11, 20))


def test_document_has_the_decree_30_parts_in_nfc() -> None:
    d = doc("07/BC-IOC")
    assert d.number_line == "Số: 07/BC-IOC" and not d.draft
    assert d.place_date == "Lộc Ninh, ngày 05 tháng 11 năm 2026"
    assert d.subject == "Tình hình hoạt động Trung tâm IOC tháng 11 năm 2026"
    assert d.recipients == ["- UBND huyện (b/c);", "- Sở Thông tin và Truyền thông;", "- Lưu: VT."]
    assert [s.number for s in d.sections] == ["", "I", "II", "III", "IV", "V"]
    for s in d.sections:
        for p in s.paragraphs:
            assert unicodedata.is_normalized("NFC", p)
    draft = doc()
    assert draft.draft and draft.number_line.startswith("Số:") and "/BC-IOC" in draft.number_line
    assert draft.place_date == "Lộc Ninh, ngày 20 tháng 11 năm 2026"


def test_six_monthly_review_and_annual_evaluation_say_so() -> None:
    from reporting.domain.periods import Kind, PeriodRules, period

    for kind, index, expected in ((Kind.SIX_MONTHLY, 1, "Sơ kết tình hình hoạt động Trung tâm IOC "
                                   "6 tháng đầu năm 2026"),
                                  (Kind.ANNUAL, 0, "Tổng kết, đánh giá tình hình hoạt động "
                                   "Trung tâm IOC năm 2026")):
        p = period(kind, 2026, index, PeriodRules())
        f = {**figures(), "kind": kind.value, "period": {"key": p.key, "label": p.label}}
        d = build_document(f, parent_body="UBND HUYỆN LỘC NINH", issuing_body="VĂN PHÒNG",
                           place="Lộc Ninh", number_suffix="BC-IOC",
                           subject="Tình hình hoạt động Trung tâm IOC", recipients=[],
                           signer=("", "CHÁNH VĂN PHÒNG", "A"), number_text=None,
                           issued_on=None, today=date(2026, 12, 20))
        assert d.subject == expected


def test_tables_keep_numbers_and_totals_equal_the_figures() -> None:
    f = figures()
    d = doc()
    units = d.sections[1].tables[1]
    assert units.total is not None and units.total[1] == sum(u["assigned"] for u in
                                                             f["incidents"]["by_unit"])
    assert all(isinstance(v, int) for r in units.rows for v in r[1:5])
    assert units.shown(units.rows[0])[5].endswith("%")
    summary = d.sections[1].tables[0]
    assert dict(summary.rows)["Tiếp nhận"] == f["incidents"]["totals"]["received"]


def test_commands_parse_and_refuse_with_reasons() -> None:
    cid = str(uuid.uuid4())
    rid = str(uuid.uuid4())
    ok = parse_command("reporting.command.approve", {"command_id": cid, "report_id": rid})
    assert isinstance(ok, Command) and ok.verb is Verb.APPROVE
    for event_type, payload, reason in (
            ("reporting.command.fly", {"command_id": cid}, Reason.UNKNOWN_VERB),
            ("reporting.command.approve", {"command_id": "x"}, Reason.MALFORMED),
            ("reporting.command.approve", {"command_id": cid}, Reason.MALFORMED),
            ("reporting.command.request", {"command_id": cid}, Reason.MALFORMED),
            ("reporting.command.request", {"command_id": cid, "period": "2026-11", "kind": "x"},
             Reason.MALFORMED)):
        got = parse_command(event_type, payload)
        assert isinstance(got, Rejection) and got.reason is reason, (event_type, payload)


def test_only_the_leader_approves_and_transitions_follow_the_table() -> None:
    assert authorise(Verb.APPROVE, frozenset({"ioc-leader", "ioc-operator"})) is None
    denied = authorise(Verb.APPROVE, frozenset({"ioc-operator"}))
    assert denied is not None and denied.message == \
        "Chỉ lãnh đạo Trung tâm IOC mới được thực hiện thao tác này."
    assert authorise(Verb.SUBMIT, frozenset({"unit-system"})) is not None
    assert transition(Verb.SUBMIT, Status.DRAFT) is Status.SUBMITTED
    assert transition(Verb.ISSUE, Status.APPROVED) is Status.ISSUED
    bad = transition(Verb.ISSUE, Status.SUBMITTED)
    assert isinstance(bad, Rejection) and bad.reason is Reason.ILLEGAL_TRANSITION
    assert isinstance(transition(Verb.SUBMIT, Status.ISSUED), Rejection)   # issued is final
    assert document_number(7, "BC-IOC") == "07/BC-IOC"


def test_the_seed_configuration_loads_and_a_broken_one_is_refused() -> None:
    cfg = load_config(REPO_ROOT / "config" / "reporting.yaml", REGISTRY)
    assert cfg.periods.cut_off == "decree-09" and cfg.rules.due_day == 25
    assert {r.amount for r in cfg.rates} == {1_000_000, 500_000}
    with pytest.raises(ReportingConfigError) as err:
        parse_config({"issuing_body": {"parent": "x", "name": "y", "place": "z", "subject": "s"},
                      "signer": {"title": "t", "name": "n"}, "recipients": [],
                      "leader": {"unit": "nowhere"},
                      "allowances": {"basis": "b", "rates": [], "staff": [
                          {"id": "p", "title": "t", "unit": "ioc-loc-ninh", "kind": "k",
                           "from": "2026-01-01"}]}}, REGISTRY)
    assert "no rate for kind 'k'" in str(err.value) and "unknown unit 'nowhere'" in str(err.value)
