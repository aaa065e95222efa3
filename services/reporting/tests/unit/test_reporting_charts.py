"""The charts of the PDF are in the DOCX too (PNG drawn by the same Typst code), also in
thematic reports."""

from __future__ import annotations

import io
from datetime import date

from docx import Document as open_docx
from reporting.domain.document import build_document
from reporting.domain.figures import Scope
from reporting.domain.periods import Kind, span
from reporting.render.office import render_docx
from reporting_examples import figures

PNG = b"\x89PNG\r\n\x1a\n"
TREND = [(date(2026, 10, 1), "received", 30), (date(2026, 10, 1), "resolved", 20),
         (date(2026, 11, 1), "received", 12), (date(2026, 11, 1), "resolved", 7)]


def document(**kw: object):  # type: ignore[no-untyped-def]
    return build_document(figures(trend=TREND, **kw), parent_body="UBND HUYỆN LỘC NINH",
                          issuing_body="VĂN PHÒNG", place="Lộc Ninh", number_suffix="BC-IOC",
                          subject="Tình hình hoạt động Trung tâm IOC", recipients=[],
                          signer=("", "PHÓ CHÁNH VĂN PHÒNG", "Nguyễn Văn A"), number_text=None,
                          issued_on=None, today=date(2026, 11, 20))


def pictures(docx: bytes) -> list[tuple[str, bytes]]:
    """(alternative text, image bytes) of every inline picture."""
    d = open_docx(io.BytesIO(docx))
    out = []
    for shape in d.inline_shapes:
        blip = shape._inline.graphic.graphicData.pic.blipFill.blip
        out.append((shape._inline.docPr.get("descr"), d.part.related_parts[blip.embed].blob))
    return out


def test_the_docx_holds_the_charts_of_the_pdf_as_images() -> None:
    doc = document()
    titles = [c.title for s in doc.sections for c in s.charts]
    assert titles == ["Biểu đồ 1. Số phản ánh theo tháng",
                      "Biểu đồ 2. Tỷ lệ xử lý đúng hạn theo đơn vị (%)"]
    got = pictures(render_docx(doc))
    assert [t for t, _ in got] == titles
    assert all(image.startswith(PNG) and len(image) > 2000 for _, image in got)


def test_a_thematic_report_has_the_charts_too() -> None:
    doc = document(period=span(Kind.THEMATIC, date(2026, 11, 1), date(2026, 11, 14)),
                   scope=Scope(category="moi-truong"))
    assert doc.subject.startswith("Chuyên đề")
    assert len(pictures(render_docx(doc))) == 2
