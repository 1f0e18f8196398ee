"""Read-only views of the audit trail, as plain dicts and lists, for the CLI and the web alike.

Every function takes a `Store` and returns JSON-ready data (times are epoch seconds), so
`mailbridge status --json` and the dashboard show the same numbers. Whatever came from a message
(subject, sender, event details, errors) passes through a `Redactor` before it leaves here, even
though events were redacted when written: secrets added to the config later are hidden too.
`format_table` renders rows for people.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Iterable, Sequence

from bridge.models import Outcome
from bridge.operator.audit import Redactor
from bridge.operator.status import RuntimeStatus, health, load_runtime, psa_auth
from bridge.parse.mime.display import header_fields, part_views
from bridge.store.db import Store
from bridge.store.operator import HEAD_BYTES

__all__ = ["HEAD_BYTES"]  # re-exported: the size of the header block the views read

OUTCOMES = [o.value for o in Outcome]
_PLAIN = Redactor()  # shapes only, for callers that pass no redactor


def _r(redactor: Redactor | None) -> Redactor:
    return redactor or _PLAIN


# -- headers ----------------------------------------------------------------------------------


def read_headers(raw: bytes | None) -> list[tuple[str, str]]:
    """All header fields of a message's header block, decoded, in order (the pipeline's
    bounded decoder: allowed codecs only, never raises)."""
    return header_fields(raw)


def subject_and_sender(raw: bytes | None) -> tuple[str, str]:
    subject = sender = ""
    for name, value in read_headers(raw):
        low = name.lower()
        if low == "subject" and not subject:
            subject = value
        elif low == "from" and not sender:
            sender = value
    return subject, sender


# -- views ------------------------------------------------------------------------------------


def outcome_counts(store: Store, since: float | None = None) -> dict[str, int]:
    """Messages by outcome, all time or recorded since `since` (uses the outcome index)."""
    return store.outcome_counts(since)


def status_view(store: Store, runtime: RuntimeStatus | None = None,
                now: float | None = None) -> dict[str, Any]:
    """The numbers of `mailbridge status` and the dashboard's header. Without `runtime` (the
    CLI, in another process) the status the daemon last saved in the store is used."""
    now = time.time() if now is None else now
    if runtime is None:
        runtime = load_runtime(store, now)
    states = store.unfinished_message_counts()
    outbox = store.outbox_state_counts()
    ok, reasons = health(runtime, store, now)
    out: dict[str, Any] = {
        "now": now,
        "healthy": ok,
        "reasons": reasons,
        "backlog": states.get("staged", 0) + states.get("processing", 0),
        "messages_by_state": {s: states.get(s, 0) for s in ("staged", "processing", "pending")},
        "outbox": {s: outbox.get(s, 0) for s in ("pending", "in_flight", "dead",
                                                  "acknowledged", "dropped", "done")},
        "failures_last_hour": store.failures_since(now - 3600),
        "outcomes_24h": outcome_counts(store, now - 86400),
        "open_tickets": store.open_ticket_count(),
        "waiting": store.waiting_reasons(),
        # Each expected report and when it is next judged (issue 20, docs/expect.md).
        "expectations": [vars(r).copy() for r in store.expectations()],
    }
    auth, auth_message, auth_at = psa_auth(store, runtime, now)
    out.update({"psa_auth": auth, "psa_auth_message": auth_message, "psa_auth_at": auth_at})
    if runtime is not None:
        # list(): one atomic copy (the daemon's loop may add a source meanwhile; views run on
        # the store's thread).
        sources = list(runtime.sources.values())
        polls = [s.last_poll for s in sources if s.last_poll]
        out.update({
            "started_at": runtime.started_at,
            "ruleset_version": runtime.ruleset_version,
            "ruleset_error": runtime.ruleset_error,
            "restart_needed": list(runtime.restart_needed),
            "psa_reachable": runtime.psa_reachable,
            "sources": [vars(s).copy() for s in sources],
            "connected_sources": sum(s.connected for s in sources),
            "last_poll": max(polls) if polls else None,
            "admin_alerts": [vars(a).copy() for a in list(runtime.admin_alerts)],
        })
    return out


def parse_since(value: str | float | datetime | None, now: float | None = None) -> float | None:
    """`--since`: "90s" / "15m" / "2h" / "7d" ago, a bare number of seconds ago (as the CLI's
    help says), ISO 8601, a datetime, or (as a float, from code) epoch seconds."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, datetime):
        return value.timestamp()
    now = time.time() if now is None else now
    text = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:].lower() in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1].lower()]
    try:
        return now - float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()  # ValueError names the bad value


def events_view(store: Store, message: int | None = None, key: str | None = None,
                since: str | float | datetime | None = None, outcome: str | None = None,
                limit: int = 200, redactor: Redactor | None = None) -> list[dict[str, Any]]:
    """The latest `limit` matching events, oldest first. `outcome` selects events carrying it
    and every event of messages that ended in it."""
    rows = store.event_rows(message_ref=message, alert_key=key, since=parse_since(since),
                            outcome=outcome, limit=limit)
    red = _r(redactor)
    for row in rows:
        text = red.redact(row["detail"]) if row["detail"] else None
        try:
            row["detail"] = json.loads(text) if text else {}
        except ValueError:  # written by hand or truncated: show it as text
            row["detail"] = {"text": text}
    rows.reverse()
    return rows


def tickets_view(store: Store, now: float | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Open correlations (tickets mailbridge believes open), most recently seen first."""
    now = time.time() if now is None else now
    rows = store.open_ticket_rows(limit)
    for row in rows:
        row["age"] = now - row["opened_at"]
        row["confirmed"] = bool(row["confirmed"])
    return rows


def _message_rows(store: Store, limit: int, redactor: Redactor | None, *,
                  outcomes: Sequence[str] | None = None,
                  message_ref: int | None = None) -> list[dict[str, Any]]:
    rows = store.message_rows(limit, outcomes=outcomes, message_ref=message_ref,
                              head_bytes=HEAD_BYTES)
    red = _r(redactor)
    for row in rows:
        subject, sender = subject_and_sender(row.pop("head"))
        row["subject"], row["sender"] = red.redact(subject), red.redact(sender)
        row["reason"] = red.redact(row["reason"] or "")
        row["pruned"] = bool(row["pruned"])
    return rows


def messages_view(store: Store, limit: int = 50,
                  redactor: Redactor | None = None) -> list[dict[str, Any]]:
    """Recent messages, newest first, with their outcome and deciding rule."""
    return _message_rows(store, limit, redactor)


def failures_view(store: Store, limit: int = 20,
                  redactor: Redactor | None = None) -> dict[str, list[dict[str, Any]]]:
    """What went wrong lately: failed/quarantined/rejected messages and dead outbox rows."""
    messages = _message_rows(store, limit, redactor,
                             outcomes=("failed", "quarantined", "rejected"))
    dead = store.dead_outbox_rows(limit)
    for row in dead:
        row["last_error"] = _r(redactor).redact(row["last_error"] or "")
    return {"messages": messages, "dead_outbox": dead}


def quarantine_list(store: Store, limit: int = 200,
                    redactor: Redactor | None = None) -> list[dict[str, Any]]:
    return _message_rows(store, limit, redactor, outcomes=("quarantined",))


def quarantine_show(store: Store, message_id: int, redactor: Redactor | None = None,
                    max_chars: int = 65536) -> dict[str, Any] | None:
    """One message for `mailbridge quarantine show`: its row, decoded headers, the text of its
    parts (decoded, redacted, cut at `max_chars`), the list of other parts, and its events.

    The raw bytes themselves are never shown: a base64 or quoted-printable part would carry an
    ATES PW or XML password past any text redaction."""
    rows = _message_rows(store, 1, redactor, message_ref=message_id)
    if not rows:
        return None
    red = _r(redactor)
    raw = store.message_raw(message_id)
    out = rows[0]
    out["headers"] = [(n, red.redact(v)) for n, v in read_headers(raw)]
    out["parts"] = _parts(raw, red, max_chars) if raw else []
    out["events"] = events_view(store, message=message_id, limit=1000, redactor=red)
    return out


def _parts(raw: bytes, red: Redactor, max_chars: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    budget = max_chars
    for part in part_views(raw, max_chars):
        info: dict[str, Any] = {"content_type": part.content_type,
                                "filename": red.redact(part.filename) if part.filename else None,
                                "size": part.size}
        if part.text is not None:
            text = part.text
            # Redact before cutting, with some room: a secret cut in two would not match.
            info["text"] = red.redact(text[:budget + 4096])[:budget]
            info["truncated"] = part.truncated or len(text) > budget
            budget = max(0, budget - len(text))
        parts.append(info)
    return parts


def alerts_per_hour(store: Store, hours: int = 24, now: float | None = None) -> dict[str, Any]:
    """Messages per clock hour by outcome (when the outcome was recorded), for the chart:
    {"hours": [hour start, …], "series": {outcome: [count per hour, …]}}, outcomes seen only."""
    now = time.time() if now is None else now
    first = (int(now) // 3600 - hours + 1) * 3600
    rows = store.outcomes_by_hour(first)
    series: dict[str, list[int]] = {}
    for outcome, h, n in rows:
        if 0 <= h < hours:
            series.setdefault(outcome, [0] * hours)[h] += n
    ordered = {o: series[o] for o in OUTCOMES if o in series}
    return {"hours": [first + 3600 * i for i in range(hours)], "series": ordered}


# -- for people -------------------------------------------------------------------------------


def is_time_key(key: str) -> bool:
    """Keys whose numbers are epoch seconds: `at`, `*_at`, camelCase `*At`, `last_poll`."""
    return key in ("at", "last_poll", "now", "started_at") or key.endswith("_at") or \
        (key.endswith("At") and key[:-2].isalpha())


def fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def format_status(data: dict[str, Any]) -> str:
    """`mailbridge status` for people: health first, then the numbers."""
    lines = [f"state:        {'ready' if data['healthy'] else 'DEGRADED'}"]
    lines += [f"  - {r}" for r in data["reasons"]]
    ob, waiting = data["outbox"], data["messages_by_state"]
    lines += [f"backlog:      {data['backlog']} staged/processing, {waiting['pending']} pending",
              f"outbox:       {ob['pending']} pending, {ob['in_flight']} in flight,"
              f" {ob['dead']} dead" + (f" ({ob['acknowledged']} more acknowledged)"
                                      if ob.get("acknowledged") else ""),
              f"failures:     {data['failures_last_hour']} in the last hour",
              f"open tickets: {data['open_tickets']}",
              *[f"waiting:      {w['rows']} row(s): {w['reason']}"
                for w in data.get("waiting", [])],
              "last 24 h:    " + (", ".join(f"{n} {o}" for o, n in
                                            sorted(data["outcomes_24h"].items())) or "nothing")]
    lines += [f"expected:     {e['name']}" + (f" [{e['scope']}]" if e["scope"] else "")
              + f" ({e['account_id']}): " + (f"MISSING since {fmt_time(e['missing_since'])}"
                                             if e["state"] == "missing"
                                             else f"next due {fmt_time(e['judge_at'])}")
              for e in data.get("expectations", [])]
    auth = data.get("psa_auth", "unknown")
    lines.append(f"PSA auth:     {auth}"
                 + (f" (last call {fmt_time(data['psa_auth_at'])})"
                    if data.get("psa_auth_at") else "")
                 + (f": {data['psa_auth_message']}" if data.get("psa_auth_message") else ""))
    if "ruleset_version" in data:
        failed = data["ruleset_error"]
        lines += [f"rule set:     {data['ruleset_version'] or '?'}"
                  + (f" (reload failed: {failed})" if failed else ""),
                  *([f"restart needed: {', '.join(data['restart_needed'])} changed in the"
                     " config; in force after the next restart"]
                    if data.get("restart_needed") else []),
                  f"last poll:    {fmt_time(data['last_poll'])}"]
        lines += [f"source {s['name']}: {'connected' if s['connected'] else 'NOT connected'}"
                  + (f" ({s['last_error']})" if s["last_error"] else "") for s in data["sources"]]
    return "\n".join(lines)


def format_table(rows: Iterable[dict[str, Any]], columns: Sequence[str | tuple[str, str]],
                 max_width: int = 60, max_total: int | None = None) -> str:
    """A plain-text table; `columns` are keys or (key, heading) pairs. Epoch times (`at`,
    `*_at`, `*At`) print as local dates, `age` as 5m/2h/3d, dicts as JSON; cells are cut at
    `max_width` characters and white space flattened, so one row stays one line; with
    `max_total` the widest columns give way until a line fits it.
    (Thirty lines here beat a table library as a dependency.)"""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]

    def cell(key: str, value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # Times are stored as epoch seconds; people read dates and ages.
            if is_time_key(key):
                value = fmt_time(value)
            elif key == "age":
                value = fmt_age(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        text = "-" if value is None or value == "" else str(value)
        return " ".join(text.split())

    body = [[cell(key, row.get(key)) for key, _ in cols] for row in rows]
    heads = [head for _, head in cols]
    widths = [min(max_width, max([len(h)] + [len(r[i]) for r in body]))
              for i, h in enumerate(heads)]
    if max_total is not None:
        floor = [min(w, max(len(h), 8)) for w, h in zip(widths, heads, strict=True)]
        while sum(widths) + 2 * (len(widths) - 1) > max_total:
            i = max(range(len(widths)), key=lambda j: widths[j] - floor[j])
            if widths[i] <= floor[i]:
                break  # nothing more can give way
            widths[i] -= 1

    def cut(text: str, w: int) -> str:
        return text if len(text) <= w else text[:w - 1] + "…"

    lines = ["  ".join(cut(h, w).ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cut(c, w).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in body]
    return "\n".join(lines)
