"""HTTP pages served by the service (starlette routes on the runtime's HTTP server):
`/reports` (every version with links to its files), `/reports/{id}/{format}`, and
`/kpi`, the live figures of the current monthly period with its charts (inline SVG)."""

from __future__ import annotations

import html
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from reporting.domain import periods as pd
from reporting.domain.formatting import STATE_NAMES, number, percent
from reporting.domain.incidents import LOCAL
from reporting.domain.lifecycle import STATUS_NAMES, Status

_MEDIA = {"pdf": "application/pdf", "json": "application/json",
          "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}

_STYLE = """<style>body{font-family:'Tinos','Liberation Serif','Noto Serif',serif;margin:2em;
max-width:1100px}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px}
th{background:#eee}td.n{text-align:right}.kpi{display:inline-block;margin:0 2em 1em 0}
.kpi b{font-size:1.6em;display:block}</style>"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang='vi'><head><meta charset='utf-8'>"
                        f"<title>{html.escape(title)}</title>{_STYLE}</head><body>"
                        f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def bars_svg(labels: list[str], values: list[float], *, unit: str = "", width: int = 640) -> str:
    """A horizontal bar chart as inline SVG (no script, no external file)."""
    top = max([1.0, *values])
    row = 22
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{row * len(labels) + 6}' "
             "role='img'>"]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = i * row + 4
        w = int((width - 320) * value / top)
        shown = percent(value) if unit == "%" else number(value)
        parts.append(f"<text x='0' y='{y + 13}' font-size='13'>{html.escape(label)}</text>"
                     f"<rect x='230' y='{y}' width='{w}' height='14' fill='#1f4e79'/>"
                     f"<text x='{236 + w}' y='{y + 12}' font-size='12'>{html.escape(shown)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def routes(holder: dict[str, Any]) -> list[Route]:
    """`holder["service"]` is the ReportService, set once the database pool exists."""

    async def report_list(request: Request) -> Response:
        svc = holder["service"]
        async with svc.pool.acquire() as conn:
            reports = await svc.repo.list_reports(conn)
        rows = []
        for r in reports:
            links = " ".join(f"<a href='/reports/{r['report_id']}/{fmt}'>{fmt.upper()}</a>"
                             for fmt in ("pdf", "docx", "xlsx", "json") if fmt in r["files"])
            rows.append(f"<tr><td>{html.escape(r['period_key'])}</td><td>{r['kind']}</td>"
                        f"<td class='n'>{r['version']}</td>"
                        f"<td>{html.escape(STATUS_NAMES[Status(r['status'])])}</td>"
                        f"<td>{html.escape(r['number'] or '')}</td><td>{links}</td></tr>")
        body = ("<p><a href='/kpi'>Chỉ số kỳ hiện tại</a></p><table><tr><th>Kỳ</th><th>Loại</th>"
                "<th>Phiên bản</th><th>Trạng thái</th><th>Số</th><th>Tệp</th></tr>"
                + "".join(rows) + "</table>")
        return _page("Báo cáo của Trung tâm IOC", body)

    async def report_file(request: Request) -> Response:
        svc = holder["service"]
        fmt = request.path_params["fmt"]
        try:
            report_id = uuid.UUID(request.path_params["report_id"])
        except ValueError:
            return JSONResponse({"error": "not a report id"}, status_code=404)
        async with svc.pool.acquire() as conn:
            report = await svc.repo.load_report(conn, report_id)
        if report is None or fmt not in report["files"] or fmt not in _MEDIA:
            return JSONResponse({"error": "no such file"}, status_code=404)
        path = Path(report["files"][fmt])
        return FileResponse(path, media_type=_MEDIA[fmt], filename=path.name)

    async def kpi(request: Request) -> Response:
        svc = holder["service"]
        today = svc.clock().astimezone(LOCAL).date()
        period = pd.containing(pd.Kind.MONTHLY, today, svc.config.rules)
        f = await svc.figures(period)
        inc = f["incidents"]
        t = inc["totals"]
        cards = "".join(f"<div class='kpi'><b>{v}</b>{html.escape(k)}</div>" for k, v in (
            ("Tiếp nhận", number(t["received"])), ("Đã xử lý xong", number(t["resolved"])),
            ("Xử lý đúng hạn", percent(inc["on_time"]["resolve_rate"])),
            ("Quá hạn chưa xong", number(t["overdue_open"])),
            ("Hài lòng (điểm TB)", number(inc["satisfaction"]["mean_score"]))))
        trend = inc["trend"]
        rated = [u for u in inc["by_unit"] if u["on_time_rate"] is not None]
        states = "".join(f"<tr><td>{html.escape(STATE_NAMES.get(s, s))}</td><td class='n'>"
                         f"{number(n)}</td></tr>" for s, n in inc["states"].items())
        body = (f"<p>{html.escape(period.label)} ({period.start:%d/%m/%Y} – {period.end:%d/%m/%Y}),"
                f" số liệu đến hiện tại. <a href='/reports'>Danh sách báo cáo</a></p>{cards}"
                f"<p>{html.escape(f['summary'])}</p>"
                "<h2>Số phản ánh theo tháng</h2>"
                + bars_svg([m["month"] for m in trend], [float(m["received"]) for m in trend])
                + "<h2>Tỷ lệ xử lý đúng hạn theo đơn vị</h2>"
                + bars_svg([u["name"] for u in rated], [float(u["on_time_rate"]) for u in rated],
                           unit="%")
                + f"<h2>Tình trạng</h2><table>{states}</table>")
        return _page("Chỉ số hoạt động Trung tâm IOC", body)

    return [Route("/reports", report_list), Route("/reports/{report_id}/{fmt}", report_file),
            Route("/kpi", kpi)]
