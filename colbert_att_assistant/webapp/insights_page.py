"""The knowledge-gap page for staff, behind the staff login (HTTP basic auth):

- `GET /insights/`: the page (colbert_att_assistant/webapp/insights.py gathers it from the conversation log);
- `GET /insights/gaps.csv`: every declined or noted question with its topic and the documents retrieved for it;
- `GET /insights/passages/{id}`: any passage, internal ones too, so each gap links to what was retrieved for it.

The rate over time is an inline SVG (no plotting library at run time), with the same numbers in a table.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from colbert_att_assistant.webapp.brand_view import brand_css
from colbert_att_assistant.webapp.insights import DayCount, Insights, VectorCache, gather
from colbert_att_assistant.webapp.services import AppServices
from colbert_att_assistant.webapp.staff_auth import basic_staff
from colbert_att_assistant.webapp.widget import passage_html

REALM = "staff"
COLOURS = {"answered": "#2f6b3a", "noted": "#a8741a", "declined": "#a23b2a"}
CSV_COLUMNS = [
    "turn_id",
    "asked_at_utc",
    "mode",
    "kind",
    "reason",
    "topic",
    "topic_label",
    "question",
    "standalone_question",
    "retrieved_documents",
    "top_score",
]
STYLE = """
body.insights { max-width: 70rem; margin: 0 auto; padding: 1rem 1.25rem 4rem; }
.insights h1 { font-weight: 400; } .insights h2 { margin-top: 2rem; font-weight: 600; font-size: 1.2rem; }
.insights table { border-collapse: collapse; font-size: .9rem; margin: .5rem 0; }
.insights th, .insights td { border-bottom: 1px solid rgba(0,0,0,.15); padding: .3rem .6rem; text-align: left;
  vertical-align: top; }
.insights .topic { border: 1px solid rgba(0,0,0,.15); border-radius: 10px; padding: .6rem .9rem; margin: .8rem 0;
  background: #fff; }
.insights .topic h3 { margin: .1rem 0 .4rem; font-size: 1.02rem; }
.insights .kind { font-size: .78rem; text-transform: uppercase; letter-spacing: .05em; padding: .05rem .4rem;
  border-radius: 4px; color: #fff; }
.insights .kind.declined { background: #a23b2a; } .insights .kind.noted { background: #7a5512; }
.insights .docs { font-size: .88rem; } .insights .summary { font-size: 1.05rem; }
.insights .legend span { display: inline-block; margin-right: 1rem; font-size: .88rem; }
.insights .swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
"""


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _passage_link(node_id: str, label: str) -> str:
    return f"<a href='/insights/passages/{quote(node_id, safe='')}'>{html.escape(label)}</a>"


def rate_chart(days: list[DayCount], width: int = 720, height: int = 220) -> str:
    """Stacked bars per day (answered, answered with a note, declined) and the answer rate as a line."""
    if not days:
        return "<p>No questions logged yet.</p>"
    left, bottom, top = 40, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(day.total for day in days) or 1
    step = plot_w / len(days)
    bar = max(2.0, min(40.0, step * 0.7))
    parts, points = [], []
    for i, day in enumerate(days):
        x = left + i * step + (step - bar) / 2
        y = top + plot_h
        for kind in ("answered", "noted", "declined"):
            count = getattr(day, kind)
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            parts.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{bar:.1f}' height='{h:.1f}' fill='{COLOURS[kind]}'>"
                f"<title>{day.day}: {count} {kind}</title></rect>"
            )
        rate = day.answered / day.total if day.total else 0.0
        points.append(f"{x + bar / 2:.1f},{top + plot_h * (1 - rate):.1f}")
        if len(days) <= 14 or i % max(1, len(days) // 7) == 0:
            centre = x + bar / 2
            parts.append(
                f"<text x='{centre:.1f}' y='{height - 10}' font-size='10' text-anchor='middle'>{day.day[5:]}</text>"
            )
    axis = (
        f"<line x1='{left}' y1='{top + plot_h}' x2='{width - 10}' y2='{top + plot_h}' stroke='#555'/>"
        f"<text x='{left - 6}' y='{top + 8}' font-size='10' text-anchor='end'>{peak}</text>"
        f"<text x='{left - 6}' y='{top + plot_h}' font-size='10' text-anchor='end'>0</text>"
    )
    line = (
        f"<polyline points='{' '.join(points)}' fill='none' stroke='#1d1b19' stroke-width='1.5' "
        "stroke-dasharray='4 3'/>"
    )
    summary = "; ".join(
        f"{d.day}: {d.answered} answered, {d.noted} with a note, {d.declined} declined" for d in days[-7:]
    )
    return (
        f"<svg id='rate-chart' role='img' aria-label='Questions per day. {html.escape(summary)}' "
        f"viewBox='0 0 {width} {height}' width='{width}' height='{height}'>{axis}{''.join(parts)}{line}</svg>"
        "<p class='legend'>"
        + "".join(
            f"<span><i class='swatch' style='background:{colour}'></i>{name}</span>"
            for name, colour in (("answered", COLOURS["answered"]), ("answered with a note", COLOURS["noted"]),
                                 ("declined", COLOURS["declined"]))
        )
        + "<span>- - answer rate (top = 100%)</span></p>"
    )  # fmt: skip


def insights_html(insights: Insights, brand_name: str, css: str) -> str:
    total = insights.questions
    summary = (
        f"<p class='summary'>{total} questions: {insights.answered} answered ({_percent(insights.answered, total)}), "
        f"{insights.noted} answered with a grounding note ({_percent(insights.noted, total)}), "
        f"{insights.declined} declined ({_percent(insights.declined, total)}).</p>"
    )
    day_rows = "".join(
        f"<tr><td>{d.day}</td><td>{d.answered}</td><td>{d.noted}</td><td>{d.declined}</td>"
        f"<td>{_percent(d.answered, d.total)}</td></tr>"
        for d in insights.days
    )
    day_table = (
        "<details><summary>The numbers</summary><table><thead><tr><th>day (UTC)</th><th>answered</th>"
        f"<th>with a note</th><th>declined</th><th>answer rate</th></tr></thead><tbody>{day_rows}</tbody></table>"
        "</details>"
    )
    topics = []
    for topic in insights.topics:
        rows = []
        for gap in topic.gaps:
            retrieved = (
                ", ".join(_passage_link(r.node_id, f"{r.title} ({r.score:.2f})") for r in gap.retrieved[:3])
                or "nothing retrieved"
            )
            asked = gap.question if gap.question == gap.standalone_question or not gap.standalone_question else (
                f"{gap.question} → “{gap.standalone_question}”"
            )  # fmt: skip
            rows.append(
                f"<tr class='gap' data-turn='{gap.turn_id}'><td><span class='kind {gap.kind}'>{gap.kind}</span></td>"
                f"<td>{html.escape(asked)}</td><td>{html.escape(gap.reason or '')}</td>"
                f"<td class='docs'>{retrieved}</td><td>{_when(gap.created)}</td></tr>"
            )
        documents = ", ".join(f"{html.escape(title)} ×{count}" for _, title, count in topic.documents)
        topics.append(
            f"<section class='topic' id='topic-{topic.id}'><h3>{topic.id}. {html.escape(topic.label)} "
            f"<small>({len(topic.gaps)} question{'s' if len(topic.gaps) != 1 else ''})</small></h3>"
            f"<p class='docs'>Retrieved for these questions: {documents or 'nothing'}</p>"
            "<table><thead><tr><th>what</th><th>question</th><th>why</th><th>documents retrieved</th>"
            f"<th>asked (UTC)</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
        )
    votes = "".join(
        f"<tr class='down-vote'><td>{html.escape(v.question)}</td><td>{html.escape(v.answer[:300])}</td>"
        f"<td>{html.escape(v.comment or '')}</td><td>{_when(v.created)}</td></tr>"
        for v in insights.down_votes
    )
    most = "".join(
        f"<tr><td>{html.escape(title)}</td><td>{html.escape(doc)}</td><td>{count}</td></tr>"
        for doc, title, count in insights.most_cited
    )
    never = "".join(
        f"<tr><td>{html.escape(title)}</td><td>{html.escape(doc)}</td><td>{html.escape(audience)}</td></tr>"
        for doc, title, audience in insights.never_cited
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Knowledge gaps — {html.escape(brand_name)}</title><link rel='stylesheet' href='/widget/panel.css'>"
        f"<style>{css}{STYLE}</style></head><body class='insights'>"
        f"<h1>Knowledge gaps — {html.escape(brand_name)}</h1>{summary}"
        "<p><a href='/insights/gaps.csv' download>Download the gaps as CSV</a> · <a href='/staff/'>Staff lookup</a></p>"
        f"<h2>Answer and decline rate per day</h2>{rate_chart(insights.days)}{day_table}"
        "<h2>Questions declined or answered with a note, by topic</h2>"
        + ("".join(topics) or "<p>None: every question was answered without a note.</p>")
        + "<h2>Answers marked unhelpful</h2>"
        + (
            "<table id='down-votes'><thead><tr><th>question</th><th>answer</th><th>comment</th><th>when (UTC)</th>"
            f"</tr></thead><tbody>{votes}</tbody></table>"
            if votes
            else "<p>No answer was marked unhelpful.</p>"
        )
        + "<h2>Documents cited most</h2>"
        + (
            "<table id='most-cited'><thead><tr><th>title</th><th>document</th><th>citations</th></tr></thead>"
            f"<tbody>{most}</tbody></table>"
            if most
            else "<p>No citations yet.</p>"
        )
        + f"<h2>Documents never cited ({len(insights.never_cited)})</h2>"
        + "<details><summary>Show them</summary><table id='never-cited'><thead><tr><th>title</th><th>document</th>"
        + f"<th>audience</th></tr></thead><tbody>{never}</tbody></table></details>"
        + "</body></html>"
    )


def gaps_csv(insights: Insights) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for topic in insights.topics:
        for gap in topic.gaps:
            writer.writerow(
                [
                    gap.turn_id,
                    _when(gap.created),
                    gap.mode,
                    gap.kind,
                    gap.reason,
                    topic.id,
                    topic.label,
                    gap.question,
                    gap.standalone_question,
                    ";".join(dict.fromkeys(r.document_id for r in gap.retrieved)),
                    f"{gap.retrieved[0].score:.4f}" if gap.retrieved else "",
                ]
            )
    return out.getvalue()


def insights_router(services: AppServices) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    basic = HTTPBasic(auto_error=False)
    assistant = services.assistant
    index, brand = assistant.index, assistant.brand
    cache = VectorCache()

    def staff(request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)) -> str:
        return basic_staff(services, request, credentials, REALM)

    async def current() -> Insights:
        # Encoding the gap questions takes a moment: off the event loop.
        return await run_in_threadpool(gather, services.log, index, index.encoder, cache)

    @router.get("/insights", dependencies=[Depends(staff)])
    def insights_slash() -> Response:
        return Response(status_code=307, headers={"Location": "/insights/"})

    @router.get("/insights/", response_class=HTMLResponse, dependencies=[Depends(staff)])
    async def page() -> str:
        return insights_html(await current(), brand.name, brand_css(brand))

    @router.get("/insights/gaps.csv", dependencies=[Depends(staff)])
    async def export() -> Response:
        return Response(
            gaps_csv(await current()),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=knowledge-gaps.csv"},
        )

    @router.get("/insights/passages/{node_id:path}", response_class=HTMLResponse, dependencies=[Depends(staff)])
    def passage(node_id: str) -> str:
        node_id = unquote(node_id)
        if node_id not in index:
            raise HTTPException(404, f"No passage {node_id!r}.")
        stored = index.get(node_id)
        title, section = str(stored.metadata.get("title", "")), str(stored.metadata.get("header_path", ""))
        return passage_html(brand, title, section, stored.text, back=("/insights/", "Back to the knowledge gaps"))

    return router
