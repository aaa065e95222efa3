"""Editable DOCX (python-docx) and XLSX (xlsxwriter) of a report, from its document model.

The workbook has one sheet per section; every figure is a number cell (rates as
percentages with a number format), so its totals are those of the JSON figures.
"""

from __future__ import annotations

import io
import re

import xlsxwriter
from docx import Document as new_docx
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Mm, Pt

from reporting.domain.document import Document, Table
from reporting.render.pdf import render_chart_png

_FONT = "Times New Roman"


def render_docx(doc: Document) -> bytes:
    d = new_docx()
    section = d.sections[0]
    section.page_height, section.page_width = Mm(297), Mm(210)
    section.top_margin = section.bottom_margin = Mm(20)
    section.left_margin, section.right_margin = Mm(30), Mm(15)
    normal = d.styles["Normal"]
    normal.font.name = _FONT
    normal.font.size = Pt(13)

    def para(text: str = "", *, bold: bool = False, italic: bool = False, size: float = 13,
             align: WD_ALIGN_PARAGRAPH | None = None, cell: object = None) -> None:
        p = cell.add_paragraph() if cell is not None else d.add_paragraph()  # type: ignore[attr-defined]
        run = p.add_run(text)
        run.bold, run.italic, run.font.size = bold, italic, Pt(size)
        if align is not None:
            p.alignment = align

    head = d.add_table(rows=1, cols=2)
    left, right = head.rows[0].cells
    left.paragraphs[0].add_run(doc.parent_body.upper()).font.size = Pt(12.5)
    para(doc.issuing_body.upper(), bold=True, size=12.5, align=WD_ALIGN_PARAGRAPH.CENTER, cell=left)
    para(doc.number_line, align=WD_ALIGN_PARAGRAPH.CENTER, cell=left)
    left.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    run = right.paragraphs[0].add_run("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM")
    run.bold, run.font.size = True, Pt(12.5)
    right.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    para("Độc lập - Tự do - Hạnh phúc", bold=True, size=13.5, align=WD_ALIGN_PARAGRAPH.CENTER,
         cell=right)
    para(doc.place_date, italic=True, align=WD_ALIGN_PARAGRAPH.CENTER, cell=right)
    para()
    para(doc.type_name, bold=True, size=14, align=WD_ALIGN_PARAGRAPH.CENTER)
    para(doc.subject, bold=True, align=WD_ALIGN_PARAGRAPH.CENTER)
    for s in doc.sections:
        if s.title:
            para(f"{s.number}. {s.title.upper()}", bold=True)
        for text in s.paragraphs:
            p = d.add_paragraph(text)
            p.alignment = WD_ALIGN_PARAGRAPH.JUSTIFY
            p.paragraph_format.first_line_indent = Mm(10)
        for t in s.tables:
            para(t.title, bold=True, italic=True, size=12)
            rows = [*t.rows, *([t.total] if t.total is not None else [])]
            table = d.add_table(rows=1 + len(rows), cols=len(t.columns))
            table.style = "Table Grid"
            table.alignment = WD_TABLE_ALIGNMENT.CENTER
            for i, name in enumerate(t.columns):
                cell = table.rows[0].cells[i]
                cell.text = name
                cell.paragraphs[0].runs[0].bold = True
            for r, row in enumerate(rows, start=1):
                for i, text in enumerate(t.shown(row)):
                    table.rows[r].cells[i].text = text
                    if i and (t.kinds[i] if i < len(t.kinds) else "text") != "text":
                        table.rows[r].cells[i].paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.RIGHT
        for c in s.charts:
            # The PDF's chart, drawn by the same Typst code, as a picture (with its
            # title as alternative text).
            d.add_picture(io.BytesIO(render_chart_png(c)), width=Mm(160))
            d.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
            d.inline_shapes[-1]._inline.docPr.set("descr", c.title)
    para()
    foot = d.add_table(rows=1, cols=2)
    left, right = foot.rows[0].cells
    run = left.paragraphs[0].add_run("Nơi nhận:")
    run.bold, run.italic, run.font.size = True, True, Pt(12)
    for recipient in doc.recipients:
        para(recipient, size=11, cell=left)
    if doc.signer_authority:
        right.paragraphs[0].add_run(doc.signer_authority).bold = True
        para(doc.signer_title, bold=True, align=WD_ALIGN_PARAGRAPH.CENTER, cell=right)
    else:
        right.paragraphs[0].add_run(doc.signer_title).bold = True
    right.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    for _ in range(3):
        para(cell=right)
    para(doc.signer_name, bold=True, align=WD_ALIGN_PARAGRAPH.CENTER, cell=right)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")


def render_xlsx(doc: Document) -> bytes:
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    bold = book.add_format({"bold": True})
    title = book.add_format({"bold": True, "italic": True})
    integer = book.add_format({"num_format": "#,##0"})
    rate = book.add_format({"num_format": "0.0"})
    header = book.add_format({"bold": True, "bg_color": "#EEEEEE", "border": 1, "text_wrap": True})
    formats = {"int": integer, "money": integer, "rate": rate, "hours": rate, "score": rate}
    for s in doc.sections:
        name = _SHEET_BAD.sub("-", s.sheet or s.title)[:31] or "Sheet"
        sheet = book.add_worksheet(name)
        sheet.set_column(0, 0, 42)
        sheet.set_column(1, 12, 16)
        row = 0
        if s.title:
            sheet.write(row, 0, f"{s.number}. {s.title}", bold)
            row += 2
        for text in s.paragraphs:
            sheet.write(row, 0, text)
            row += 1
        for t in s.tables:
            row = _write_table(sheet, row + 1, t, title, header, bold, formats)
    book.close()
    return out.getvalue()


def _write_table(sheet: xlsxwriter.worksheet.Worksheet, row: int, t: Table,
                 title: xlsxwriter.format.Format, header: xlsxwriter.format.Format,
                 bold: xlsxwriter.format.Format,
                 formats: dict[str, xlsxwriter.format.Format]) -> int:
    sheet.write(row, 0, t.title, title)
    row += 1
    for i, name in enumerate(t.columns):
        sheet.write(row, i, name, header)
    row += 1
    for values in [*t.rows, *([t.total] if t.total is not None else [])]:
        is_total = t.total is not None and values is t.total
        for i, value in enumerate(values):
            kind = t.kinds[i] if i < len(t.kinds) else "text"
            if value is None or value == "":
                continue
            if kind != "text" and isinstance(value, int | float):
                sheet.write_number(row, i, value, formats.get(kind))
            else:
                sheet.write_string(row, i, str(value), bold if is_total else None)
        row += 1
    return row + 1
