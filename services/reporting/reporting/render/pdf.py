"""PDF of a report, rendered by the Typst compiler the `typst` wheel carries.

Fonts: Tinos (Debian fonts-croscore, Times New Roman metrics) and Liberation Serif 2
(fonts-liberation2) when installed, Noto Serif from the pinned `fontpkg-noto-serif`
wheel always. System fonts are ignored, so Debian's old fonts-liberation (which lacks
Vietnamese glyphs) is never picked up.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import typst

from reporting.domain.document import Chart, Document, Table, show

TEMPLATE = Path(__file__).resolve().parent / "report.typ"
CHART_TEMPLATE = Path(__file__).resolve().parent / "chart-image.typ"
_DEBIAN_FONTS = (("Tinos", Path("/usr/share/fonts/truetype/croscore"), "Tinos-Regular.ttf"),
                 ("Liberation Serif", Path("/usr/share/fonts/truetype/liberation2"),
                  "LiberationSerif-Regular.ttf"))


@lru_cache(maxsize=1)
def fonts() -> tuple[list[str], list[str]]:
    """(family names in order of preference, folders to load them from)."""
    import fontpkg_noto_serif

    families, folders = [], []
    for family, folder, probe in _DEBIAN_FONTS:
        if (folder / probe).exists():
            families.append(family)
            folders.append(str(folder))
    families.append(str(fontpkg_noto_serif.FAMILY))
    folders.append(str(Path(fontpkg_noto_serif.__file__).resolve().parent / "files"))
    return families, folders


def _table(t: Table) -> dict[str, Any]:
    return {"title": t.title, "columns": list(t.columns), "kinds": list(t.kinds),
            "rows": [t.shown(r) for r in t.rows],
            "total": t.shown(t.total) if t.total is not None else None}


def _chart(c: Chart) -> dict[str, Any]:
    def label(v: float) -> str:
        return show(v, "rate" if c.unit == "%" else "int")

    shown = [label(v) if c.secondary is None else f"{label(v)} / {label(c.secondary[i])}"
             for i, v in enumerate(c.values)]
    return {"title": c.title, "labels": c.labels, "values": c.values, "secondary": c.secondary,
            "legend": list(c.legend), "shown": shown}


def document_json(doc: Document) -> bytes:
    data = asdict(doc)
    data["sections"] = [{"number": s.number, "title": s.title, "paragraphs": s.paragraphs,
                         "tables": [_table(t) for t in s.tables],
                         "charts": [_chart(c) for c in s.charts]} for s in doc.sections]
    return orjson.dumps(data)


def render_pdf(doc: Document, *, image: bool = False) -> bytes:
    """The PDF (or, with `image`, a PNG of the first page)."""
    families, folders = fonts()
    inputs = {"doc": document_json(doc).decode(), "fonts": orjson.dumps(families).decode()}
    out = typst.compile(str(TEMPLATE), font_paths=folders, ignore_system_fonts=True,
                        sys_inputs=inputs, format="png" if image else "pdf",
                        ppi=110 if image else None)
    if isinstance(out, list):     # PNG of a multi-page document: one image per page
        out = out[0]
    assert isinstance(out, bytes)
    return out


def render_chart_png(chart: Chart, *, ppi: int = 200) -> bytes:
    """One chart as a PNG (the DOCX embeds it), laid out as in the PDF."""
    families, folders = fonts()
    inputs = {"chart": orjson.dumps(_chart(chart)).decode(), "fonts": orjson.dumps(families).decode()}
    out = typst.compile(str(CHART_TEMPLATE), font_paths=folders, ignore_system_fonts=True,
                        sys_inputs=inputs, format="png", ppi=ppi)
    if isinstance(out, list):
        out = out[0]
    assert isinstance(out, bytes)
    return out
