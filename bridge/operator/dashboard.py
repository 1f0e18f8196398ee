"""The read-only dashboard page, rendered on the server: recent messages with outcome and rule,
open tickets, failures, outbox depth and an inline SVG chart of alerts per hour by outcome.

No script, no CDN, no build step; every value is HTML-escaped and has passed the redactor.
`bridge.operator.web` serves it.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import string
import time
from typing import Any, Callable, Sequence

from bridge.operator import views
from bridge.operator.audit import Redactor

COLOURS = {"created": "#2e7d32", "appended": "#66bb6a", "resolved": "#1565c0",
           "nothing-to-resolve": "#90caf9", "coalesced": "#7e57c2", "damped": "#b39ddb",
           "suppressed": "#8d6e63",
           "skipped": "#9e9e9e", "unmatched": "#f9a825", "regular": "#b0bec5", "xml": "#26a69a",
           "rejected": "#ef6c00", "quarantined": "#5d4037", "failed": "#c62828",
           "pending": "#607d8b", "staged": "#78909c", "processing": "#78909c"}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(outcome: str | None) -> str:
    name = outcome or "?"
    return f'<span class="o o-{_e(name)}">{_e(name)}</span>'


def _table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, Callable[[Any], str], str]],
           empty: str) -> str:
    """cols: (heading, cell -> HTML, css class). Cell functions escape what they print."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h, _, _ in cols)
    body = "".join("<tr>" + "".join(f'<td class="{c}">{f(r)}</td>' for _, f, c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _t(ts: float | None) -> str:
    return _e(views.fmt_time(ts))


def _chart(data: dict[str, Any]) -> str:
    """Stacked bars, one per hour; each segment has a <title> as its tooltip (no script)."""
    hours, series = data["hours"], data["series"]
    width, height, left, bottom, top = 760, 200, 36, 22, 8
    totals = [sum(s[i] for s in series.values()) for i in range(len(hours))]
    peak = max(totals + [1])
    step = max(1, -(-peak // 4))  # four grid lines, whole numbers
    ymax = step * 4
    plot_h, slot = height - bottom - top, (width - left) / len(hours)
    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img"'
           f' aria-label="messages per hour by outcome">']
    for k in range(5):
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{step * k}</text>')
    for i, start in enumerate(hours):
        x, y = left + i * slot + slot * 0.15, top + plot_h
        for outcome, counts in series.items():
            if not counts[i]:
                continue
            h = plot_h * counts[i] / ymax
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"'
                       f' fill="{COLOURS.get(outcome, "#999")}"><title>'
                       f'{_e(time.strftime("%H:%M", time.localtime(start)))} {_e(outcome)}:'
                       f' {counts[i]}</title></rect>')
        if i % 3 == 0:
            out.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - 6}"'
                       f' text-anchor="middle">{time.strftime("%H:%M", time.localtime(start))}'
                       f'</text>')
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{COLOURS.get(o, "#999")}"></i>{_e(o)}'
                     f' ({sum(c)})</span>' for o, c in series.items())
    return "".join(out) + f'<div class="legend">{legend or "no messages in the last 24 h"}</div>'


@functools.cache
def _template() -> string.Template:
    return string.Template(importlib.resources.files("bridge.operator").joinpath(
        "web_templates/dashboard.html").read_text(encoding="utf-8"))


def render_dashboard(data: dict[str, Any], red: Redactor, refresh: int = 30,
                     candidate: bool = False) -> str:
    """The page; `candidate`: a candidate rule directory is configured, so link its diff."""
    st, now = data["status"], time.time()
    state = "ready" if st["healthy"] else "degraded"
    meta = [f"rules {st.get('ruleset_version') or '?'}",
            f"PSA auth {st.get('psa_auth', '?')}",
            f"up since {views.fmt_time(st['started_at'])}" if st.get("started_at") else ""]
    reasons = "".join(f"<li>{_e(red.redact(r))}</li>" for r in st["reasons"])
    outbox = st["outbox"]
    cards = [("backlog", st["backlog"], False), ("pending", st["messages_by_state"]["pending"],
                                                 False),
             ("outbox pending", outbox["pending"] + outbox["in_flight"], False),
             ("dead rows", outbox["dead"], outbox["dead"] > 0),
             ("failures, last hour", st["failures_last_hour"], st["failures_last_hour"] > 0),
             ("open tickets", st["open_tickets"], False),
             ("messages, 24 h", sum(st["outcomes_24h"].values()), False)]
    messages = _table(data["messages"], [
        ("#", lambda r: _e(r["id"]), "num"), ("arrived", lambda r: _t(r["arrived_at"]), "t"),
        ("from", lambda r: _e(r["sender"]), "wrap"),
        ("subject", lambda r: _e(r["subject"]), "wrap"),
        ("outcome", lambda r: _badge(r["outcome"] or r["state"]), ""),
        ("rule", lambda r: _e(r["rule"] or "-"), "mono"),
        ("alert key", lambda r: _e(r["alert_key"] or "-"), "mono wrap"),
        ("reason", lambda r: _e(r["reason"]), "wrap")], "no messages yet")
    tickets = _table(data["tickets"], [
        ("alert key", lambda r: _e(r["alert_key"]), "mono wrap"),
        ("account", lambda r: _e(r["account_id"]), ""), ("title", lambda r: _e(r["title"]), "wrap"),
        ("age", lambda r: _e(views.fmt_age(r["age"])), "num"),
        ("occurrences", lambda r: _e(r["occurrences"]), "num")], "no open tickets")
    sources = _table(st.get("sources", []), [
        ("source", lambda r: _e(r["name"]), "mono"),
        ("connected", lambda r: "yes" + (" (IDLE)" if r["idle"] else "") if r["connected"]
         else "<b>no</b>", ""),
        ("last poll", lambda r: _t(r["last_poll"]), "t"),
        ("last error", lambda r: _e(red.redact(r["last_error"] or "")), "wrap")],
        "no sources reported")
    if st.get("expectations"):
        sources += '<h2 class="sub">Expected mail</h2>' + _table(st["expectations"], [
            ("expectation", lambda r: _e(r["name"]), "mono"),
            ("for", lambda r: _e(r["scope"] or r["account_id"]), "mono wrap"),
            ("last report", lambda r: _t(r["last_seen_at"]), "t"),
            ("state", lambda r: "<b>missing</b>" if r["state"] == "missing" else "watching", ""),
            ("next due", lambda r: _t(r["judge_at"]) if r["state"] != "missing" else "-", "t")],
            "")
    outbox_html = _table([{"state": k, "n": v} for k, v in outbox.items()], [
        ("outbox state", lambda r: _e(r["state"]), ""), ("rows", lambda r: _e(r["n"]), "num")], "")
    fails = data["failures"]
    failures = _table(fails["messages"], [
        ("#", lambda r: _e(r["id"]), "num"), ("when", lambda r: _t(r["updated_at"]), "t"),
        ("outcome", lambda r: _badge(r["outcome"]), ""),
        ("subject", lambda r: _e(r["subject"]), "wrap"),
        ("reason", lambda r: _e(r["reason"]), "wrap")], "no failed, rejected or quarantined"
                                                         " messages")
    if fails["dead_outbox"]:
        failures += '<h2 class="sub">Dead outbox rows</h2>' + _table(fails["dead_outbox"], [
            ("row", lambda r: _e(r["id"]), "num"), ("kind", lambda r: _e(r["kind"]), ""),
            ("action", lambda r: _e(r["action"]), ""),
            ("key", lambda r: _e(r["ordering_key"]), "mono wrap"),
            ("attempts", lambda r: _e(r["attempts"]), "num"),
            ("error", lambda r: _e(r["last_error"]), "wrap")], "")
    return _template().substitute(
        refresh=int(refresh), state=state, meta=_e(" · ".join(m for m in meta if m)),
        links='<a class="meta" href="/rules/diff">candidate rules: what would change</a>'
        if candidate else "",
        reasons=f'<ul class="reasons">{reasons}</ul>' if reasons else "",
        cards="".join(f'<div class="card{" alarm" if alarm else ""}"><div class="n">{_e(n)}</div>'
                      f'<div class="l">{_e(label)}</div></div>' for label, n, alarm in cards),
        chart=_chart(data["chart"]), messages=messages, tickets=tickets, sources=sources,
        outbox=outbox_html, failures=failures, generated=_e(views.fmt_time(now)),
        outcome_css="\n".join(f"  .o-{k} {{ background:{v}; }}" for k, v in COLOURS.items()))


# -- serving ----------------------------------------------------------------------------------

