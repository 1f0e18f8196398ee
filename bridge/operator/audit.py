"""The one place where audit events and log lines are made safe, and where the trail is pruned.

`Redactor` replaces every configured secret — and any value that *looks* like a credential
(ATES `PW name=`, XML `<Password>`, `clientSecret`, `organizationOemToken`, bearer tokens,
`password=`, URL user-info, XOAUTH2 strings) — with ``[redacted]``, using compiled regular
expressions behind a cheap substring check, so it is fast enough for every event and log
record. The daemon hands its `redact` to the store (`store.redact = redactor.redact`: every
event's detail passes through it) and to `setup_logging`, whose handler filter redacts every
record, whatever library logged it. `prune` applies the retention: raw bytes and events older
than it go, message rows and their outcomes stay for the audit.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
from datetime import datetime, timezone
from typing import IO, Any, Iterable, Mapping, MutableMapping

from bridge.config import LogSettings
from bridge.store.db import Store

REDACTED = "[redacted]"

# Credentials recognised by their shape, whatever the config says. Each alternative has exactly
# one named group: the value to hide; what precedes it (the key, an opening quote) is kept so a
# redacted line still says *what* was hidden. Quotes may come JSON-escaped (\") or HTML-escaped
# (&quot;), and `=` may come quoted-printable (=3D), since raw mail and JSON details are redacted
# as text.
_EQ = r"\s*(?:=3D|=)\s*"
_KEYS = (r"client_?secret|organization_?oem_?token|password|passwd|pwd|pw|secret|api_?key|"
         r"x-api-key|access_?token|refresh_?token|id_?token|auth_?token|token")
_SHAPES = [
    # ATES: <PW name="…"/> (seed 001), also HTML-escaped or QP-encoded in a body. A quoted
    # value runs to its closing quote (the seed's example PW contains a "/").
    rf"\bPW\s+name{_EQ}\\?\"(?P<ates1>[^\"\\]+)",
    rf"\bPW\s+name{_EQ}'(?P<ates2>[^']+)",
    rf"\bPW\s+name{_EQ}&quot;(?P<ates3>.{{1,256}}?)(?=&quot;)",
    rf"\bPW\s+name{_EQ}(?P<ates4>[^\s\"'&>]+?)(?=/?>|\s|&|$)",
    # XML transactions: <Password>…</Password> (any prefix or case), also HTML-escaped. No
    # attributes allowed: `<PW name="x"/>` must reach the ATES shapes above, not this one.
    r"<(?:[\w.-]+:)?(?:password|passwd|pw)\s*>(?P<xml>[^<]+)",
    r"&lt;(?:[\w.-]+:)?(?:password|passwd|pw)\s*&gt;(?P<xmlesc>.{1,256}?)(?=&lt;)",
    # key=value, key="value", "key": "value" (JSON, dict reprs, form bodies, XML attributes).
    # The `key: value` form needs a quoted value, so prose like "password: wrong" stays.
    rf"\b(?:{_KEYS})(?:\\?[\"'])?(?:{_EQ}|\s*:\s*)\\?\"(?P<kv1>[^\"\\]+)",
    rf"\b(?:{_KEYS})(?:\\?[\"'])?(?:{_EQ}|\s*:\s*)'(?P<kv2>[^']+)",
    rf"\b(?:{_KEYS})(?:&quot;)?(?:{_EQ}|\s*:\s*)&quot;(?P<kv3>.{{1,256}}?)(?=&quot;)",
    rf"\b(?:{_KEYS}){_EQ}(?P<kv4>[^\s\"'\\,;&<>}}]+)",
    # HTTP authorization and OAuth material.
    r"\bauthorization\W{0,4}\s*(?:basic|bearer|token)\s+(?P<auth>[A-Za-z0-9._~+/-]+=*)",
    r"\bbearer\s+(?P<bearer>[A-Za-z0-9._~+/-]{8,}=*)",
    r"\bXOAUTH2\s+(?P<xoauth>[A-Za-z0-9+/]{8,}=*)",
    # scheme://user:password@host
    r"://[^/\s:@\"']+:(?P<url>[^@\s/\"']+)@",
]
_SHAPE_RE = re.compile("|".join(_SHAPES), re.IGNORECASE | re.DOTALL)
# Every shape above contains one of these (lower-cased): text without any of them, and without
# any configured secret, is returned untouched without running the big expression. Most events
# and log lines take that path, which keeps redaction at about a microsecond a line.
_TRIGGERS = ("pw", "pass", "secret", "token", "apikey", "api_key", "api-key", "authorization",
             "bearer", "xoauth")


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in the text we redact: as is, inside JSON, HTML, a URL."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             html.escape(secret), html.escape(secret, quote=False),
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return {f for f in forms if f}


class Redactor:
    """Replaces secrets in text with ``[redacted]``.

    `secrets` are literal values (e.g. `Settings.secrets()`); `update` adds more at run time
    (SIGHUP reloads credentials): old ones stay hidden, since they may still sit in a queued
    payload or a log line about to be written.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._compiled = self._compile()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets |= {s for s in secrets if s}
            # Swapping one attribute is atomic: a concurrent redact() uses old or new, never
            # half of each.
            self._compiled = self._compile()

    def _compile(self) -> tuple[re.Pattern[str] | None, re.Pattern[str], tuple[str, ...]]:
        forms: set[str] = set()
        for secret in self._secrets:
            forms |= _variants(secret)
        # Longest first, so a secret that contains another one is hidden whole.
        literal = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        secrets = re.compile(f"(?P<secret>{literal})", re.IGNORECASE) if literal else None
        triggers = _TRIGGERS + tuple(sorted({f.lower() for f in forms}))
        return secrets, _SHAPE_RE, triggers

    def redact(self, text: str) -> str:
        if not text:
            return text
        secrets, shapes, triggers = self._compiled
        low = text.lower()
        if not any(t in low for t in triggers) and not ("://" in low and "@" in low):
            return text
        # Configured secrets first, in a pass of their own: a shape match that starts earlier
        # (`clientSecret=` before the value) must not swallow half of a secret and leave the
        # rest, e.g. the part after an "&", in plain sight.
        if secrets is not None:
            text = secrets.sub(REDACTED, text)
        return shapes.sub(_replace, text)

    def redact_obj(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dicts, lists, strings)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        return value


def _replace(match: re.Match[str]) -> str:
    group = match.lastgroup or 0
    start, end = match.start(group) - match.start(), match.end(group) - match.start()
    whole = match.group(0)
    if whole[start:].startswith(REDACTED):  # hidden by the secrets pass already: keep as is
        return whole
    return whole[:start] + REDACTED + whole[end:]


# -- logging ----------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                        "color_message"}


class RedactingFilter(logging.Filter):
    """Attached to a handler, so it sees records from every logger (ours, uvicorn, aiohttp …).

    It renders the message, its extras and any traceback, redacts them, and freezes the result
    into the record, so no formatter can print the unredacted arguments later."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class HumanFormatter(logging.Formatter):
    """`2026-11-03 12:00:01 INFO  bridge.deliver: sent OPEN [message_ref=12 alert_key=k]`."""

    def __init__(self, with_time: bool = True):
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if self.with_time:
            line = time.strftime("%Y-%m-%d %H:%M:%S ", time.localtime(record.created)) + line
        extras = _extras(record)
        if extras:
            line += " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]"
        exc = record.exc_text or (self.formatException(record.exc_info)
                                  if record.exc_info else "")
        # One line per event: a traceback is folded into the line, not spread over many.
        return line + (" | " + exc.replace("\n", " | ") if exc else "")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extras (message_ref, alert_key)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        out.update(_extras(record))
        exc = record.exc_text or (self.formatException(record.exc_info)
                                  if record.exc_info else "")
        if exc:
            out["exc"] = exc
        return json.dumps(out, default=str, ensure_ascii=False)


def _under_journal(stream: IO[str]) -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode of the stream it connected to stderr/stdout."""
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
        dev, ino = (int(x) for x in value.split(":"))
        return (st.st_dev, st.st_ino) == (dev, ino)
    except (OSError, ValueError, AttributeError):
        return True  # set but not checkable (e.g. a test stream): trust it


_MARK = "_mailbridge_handler"


def _quiet_retry_hook(details: Any) -> None:
    """stamina logs every in-call retry at WARNING by default; the outbox already records
    each failed attempt as a `retry` event, so these go to DEBUG, one short line each."""
    logging.getLogger("mailbridge.retry").debug(
        "retry %d of %s in %.1f s: %s", details.retry_num, details.name, details.wait_for,
        details.caused_by)


def setup_logging(settings: LogSettings, redactor: Redactor,
                  stream: IO[str] | None = None) -> logging.Handler:
    """Install one redacting handler on the root logger (replacing one installed before).

    Format "auto" is JSON under systemd's journal, human otherwise (the journal adds its own
    timestamp, the human format on a terminal has one)."""
    import stamina.instrumentation

    stamina.instrumentation.set_on_retry_hooks([_quiet_retry_hook])
    stream = stream or sys.stderr
    journal = _under_journal(stream)
    use_json = settings.format == "json" or (settings.format == "auto" and journal)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else HumanFormatter(with_time=not journal))
    handler.addFilter(RedactingFilter(redactor))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Chatty libraries: each request is already an event of ours; their DEBUG lines would
    # include protocol traffic (redacted, but noise).
    quiet = logging.DEBUG if settings.level == "DEBUG" else logging.WARNING
    for name in ("aiohttp", "aioimaplib", "aiosmtplib", "uvicorn.access"):
        logging.getLogger(name).setLevel(quiet)
    return handler


class MessageLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that stamps every record with a message's id and alert key:
    `log = MessageLog(logger, message_ref=12, alert_key="k"); log.info("sent")`."""

    def __init__(self, logger: logging.Logger, **context: Any):
        super().__init__(logger, {k: v for k, v in context.items() if v is not None})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


# -- retention --------------------------------------------------------------------------------


def prune(store: Store, retention_days: float, correlation_retention_days: float | None = None,
          now: float | None = None) -> dict[str, int]:
    """Apply the retention; returns how many rows each step touched.

    - raw bytes of finished messages staged before the cut-off are deleted (the row, its
      outcome and reason stay: the audit outlives the evidence);
    - events before the cut-off are deleted;
    - delivered (done) outbox rows before the cut-off are deleted (dead rows wait for the admin);
    - closed or void correlations older than `correlation_retention_days` are deleted.
    Staged, in-process and pending messages keep their bytes whatever their age."""
    now = time.time() if now is None else now
    cut = now - retention_days * 86400
    corr_cut = now - (correlation_retention_days or retention_days) * 86400
    # In batches (a long prune never blocks the pipeline for long); the `pruned` event is
    # recorded in the last one.
    return store.prune_before(cut, corr_cut, retention_days=retention_days)
