"""The "API by Email" transaction format (seed 002): read a request, write its response.

An integrator mails a `<mailbridge-transaction version="1">` document naming its application,
an optional password, an optional response address and transaction id, and up to 100
`<open>`/`<update>`/`<resolve>` actions keyed by `<alert-id>`. docs/xml-api.md is the user
documentation and docs/xml-api.xsd the schema; this module accepts exactly what that schema
accepts (the tests hold both to it). Parsing goes through `xmlsafe`, results are values
(`Transaction` or `XmlApiError`, never an exception), a document is accepted or refused as a
whole, and the password is held as a `SecretStr` so it never appears in a repr, log or error.
`build_response`/`response_text` render the per-action outcomes the pipeline decided.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

from pydantic import SecretStr

if TYPE_CHECKING:
    from lxml import etree

# lxml is imported inside the functions that build or read a tree: the daemon imports this
# module for its types and `looks_like_transaction`, but only a worker (reading) or an XML
# reply (writing) needs lxml, and the issue 13 memory bar sums every process.

__all__ = [
    "Action", "ActionResult", "Transaction", "XmlApiError", "OUTCOMES",
    "build_response", "check_password", "is_transaction", "looks_like_transaction",
    "parse_transaction", "response_text",
]

ROOT = "mailbridge-transaction"
RESPONSE_ROOT = "mailbridge-response"
VERSION = "1"
MAX_ACTIONS = 100

ActionKind = Literal["open", "update", "resolve"]
_STATUS: dict[str, Literal["open", "update", "resolved"]] = {
    "open": "open", "update": "update", "resolve": "resolved"}
# Header elements, in the order the schema requires; then the actions.
_HEADER = ("application", "password", "respond-to", "transaction-id")
_FIELDS = ("alert-id", "title", "summary", "account", "product-group", "alert-type", "device")
_REQUIRED = {"open": ("alert-id", "title", "account"), "update": ("alert-id",),
             "resolve": ("alert-id",)}
_MAX_CHARS = {"application": 100, "password": 1000, "respond-to": 254, "transaction-id": 100,
              "alert-id": 200, "title": 1000, "summary": 64000, "account": 200,
              "product-group": 200, "alert-type": 200, "device": 200}
# The same patterns as docs/xml-api.xsd (anchored there implicitly).
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_TRANSACTION_ID = re.compile(r"[A-Za-z0-9._:/#@+-]{1,100}")
_NOT_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Outcomes an action can be reported with: the message outcomes of SPEC §3.8 that apply to one
# alert, plus "pending" (queued; the PSA has not answered yet).
OUTCOMES = ("created", "appended", "resolved", "nothing-to-resolve", "coalesced", "damped",
            "suppressed", "pending", "failed", "rejected")
_FAILED = {"failed", "rejected"}


@dataclass(frozen=True)
class XmlApiError:
    """Why a transaction (or one action in it) was refused: a stable code and a sentence.

    Messages name elements, never their content, so no password can leak through one.
    `action` is the 1-based index of the action at fault, when there is one.
    """

    code: str
    message: str
    action: int | None = None


@dataclass(frozen=True)
class Action:
    """One `<open>`, `<update>` or `<resolve>`; `alert_id` ties updates and resolves to the open."""

    index: int
    kind: ActionKind
    alert_id: str
    title: str | None = None
    summary: str | None = None
    account: str | None = None
    product_group: str | None = None
    alert_type: str | None = None
    device: str | None = None

    @property
    def status(self) -> Literal["open", "update", "resolved"]:
        return _STATUS[self.kind]


@dataclass(frozen=True)
class Transaction:
    """A validated transaction document."""

    application: str
    actions: tuple[Action, ...]
    password: SecretStr | None = field(default=None, repr=False)
    respond_to: str | None = None
    transaction_id: str | None = None
    version: str = VERSION

    def alert_key(self, action: Action) -> str:
        """The alert identity (SPEC §3.5): application and alert-id, so two integrators'
        alert ids never collide."""
        return f"xml:{self.application.casefold()}:{action.alert_id}"


@dataclass(frozen=True)
class ActionResult:
    """What became of one action, as the pipeline decided it; rendered into the response."""

    index: int
    kind: ActionKind
    alert_id: str
    outcome: str
    correlation_id: str | None = None
    error: XmlApiError | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")


# -- reading -----------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, code: str, message: str, action: int | None = None) -> None:
        super().__init__(code)
        self.error = XmlApiError(code, message, action)


def is_transaction(root: object) -> bool:
    """True when a parsed document's root element is a mailbridge transaction."""
    from lxml import etree

    return isinstance(root, etree._Element) and root.tag == ROOT


def looks_like_transaction(data: bytes) -> bool:
    """Cheap pre-check on raw bytes before paying for a parse (classification, SPEC §3.4)."""
    return b"<" + ROOT.encode() in data[:4096] or ROOT.encode("utf-16-le") in data[:8192] \
        or ROOT.encode("utf-16-be") in data[:8192]


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _text(element: etree._Element, name: str, action: int | None) -> str:
    if len(element) or element.attrib:
        raise _Refused("invalid-value", f"<{name}> must hold text only", action)
    raw = (element.text or "").replace("\r\n", "\n").replace("\r", "\n")
    # Passwords and summaries keep their inner whitespace; names and ids are folded.
    value = raw.strip() if name in ("summary", "password") else " ".join(raw.split())
    if not value:
        raise _Refused("invalid-value", f"<{name}> is empty", action)
    if len(value) > _MAX_CHARS[name]:
        raise _Refused("field-too-long", f"<{name}> is longer than {_MAX_CHARS[name]} characters",
                       action)
    return value


def _tag(element: etree._Element) -> str:
    return element.tag if isinstance(element.tag, str) else "?"


def _read_action(element: etree._Element, index: int) -> Action:
    kind: ActionKind = element.tag  # the caller only passes tags that are keys of _REQUIRED
    if element.attrib:
        raise _Refused("unknown-attribute", f"<{kind}> takes no attributes", index)
    if not _blank(element.text):
        raise _Refused("unexpected-text", f"text directly inside <{kind}>", index)
    values: dict[str, str] = {}
    for child in element:
        name = _tag(child)
        if name not in _FIELDS:
            raise _Refused("unknown-element", f"<{name[:60]}> is not allowed in <{kind}>", index)
        if name in values:
            raise _Refused("duplicate-element", f"<{name}> given twice in <{kind}>", index)
        if not _blank(child.tail):
            raise _Refused("unexpected-text", f"text after <{name}> in <{kind}>", index)
        values[name] = _text(child, name, index)
    for name in _REQUIRED[kind]:
        if name not in values:
            raise _Refused("missing-element", f"<{kind}> needs <{name}>", index)
    return Action(index=index, kind=kind, alert_id=values["alert-id"], title=values.get("title"),
                  summary=values.get("summary"), account=values.get("account"),
                  product_group=values.get("product-group"), alert_type=values.get("alert-type"),
                  device=values.get("device"))


def _read(root: etree._Element) -> Transaction:
    if not is_transaction(root):
        raise _Refused("not-a-transaction", f"the root element is not <{ROOT}>")
    if root.get("version") != VERSION:
        raise _Refused("unsupported-version", f'<{ROOT}> needs version="{VERSION}"')
    if set(root.attrib) - {"version"}:
        raise _Refused("unknown-attribute", f"<{ROOT}> takes only the version attribute")
    if not _blank(root.text):
        raise _Refused("unexpected-text", f"text directly inside <{ROOT}>")
    header: dict[str, str] = {}
    actions: list[Action] = []
    position = -1  # index into _HEADER of the last header element seen
    for child in root:
        name = _tag(child)
        if not _blank(child.tail):
            raise _Refused("unexpected-text", f"text after <{name[:60]}>")
        if name in _HEADER:
            if name in header:
                raise _Refused("duplicate-element", f"<{name}> given twice")
            if actions or _HEADER.index(name) < position:
                raise _Refused("invalid-order", f"<{name}> is out of order (see docs/xml-api.md)")
            position = _HEADER.index(name)
            header[name] = _text(child, name, None)
        elif name in _REQUIRED:
            if len(actions) >= MAX_ACTIONS:
                raise _Refused("too-many-actions", f"more than {MAX_ACTIONS} actions")
            actions.append(_read_action(child, len(actions) + 1))
        else:
            raise _Refused("unknown-element", f"<{name[:60]}> is not allowed in <{ROOT}>")
    if "application" not in header:
        raise _Refused("missing-element", "<application> is required")
    if not actions:
        raise _Refused("no-actions", "no <open>, <update> or <resolve> action")
    respond_to = header.get("respond-to")
    if respond_to is not None and not _ADDRESS.fullmatch(respond_to):
        raise _Refused("invalid-value", "<respond-to> is not a plain e-mail address")
    transaction_id = header.get("transaction-id")
    if transaction_id is not None and not _TRANSACTION_ID.fullmatch(transaction_id):
        raise _Refused("invalid-value", "<transaction-id> may hold only letters, digits and ._:/#@+-")
    password = header.get("password")
    return Transaction(application=header["application"], actions=tuple(actions),
                       password=SecretStr(password) if password is not None else None,
                       respond_to=respond_to, transaction_id=transaction_id)


_UNSAFE_CODES = {"too large": "too-large", "not well-formed": "not-well-formed",
                 "invalid encoding": "invalid-encoding"}


def parse_transaction(data: bytes, max_bytes: int = 1024 * 1024) -> Transaction | XmlApiError:
    """Read a transaction document; a value either way, never an exception."""
    from bridge.parse.xmlsafe import UnsafeXml, parse_untrusted

    try:
        root = parse_untrusted(data, max_bytes=max_bytes)
    except UnsafeXml as exc:
        return XmlApiError(_UNSAFE_CODES.get(exc.kind, "unsafe-xml"), exc.reason)
    try:
        return _read(root)
    except _Refused as refused:
        return refused.error
    except Exception as exc:  # noqa: BLE001 - a bug here must refuse the mail, not stop the daemon
        return XmlApiError("internal-error", f"could not read the transaction ({type(exc).__name__})")


def check_password(tx: Transaction, expected: str | SecretStr | None) -> bool:
    """True when no password is configured, or the transaction carries exactly that one.

    Both sides are hashed first so the constant-time comparison does not even reveal the
    configured password's length.
    """
    wanted = expected.get_secret_value() if isinstance(expected, SecretStr) else expected
    if not wanted:
        return True
    given = tx.password.get_secret_value() if tx.password is not None else ""
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).digest(),
                               hashlib.sha256(wanted.encode("utf-8")).digest())


# -- writing -----------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return _NOT_XML_CHARS.sub("\ufffd", text)


def _status(results: Sequence[ActionResult], error: XmlApiError | None) -> str:
    if error is not None:
        return "rejected"
    failed = sum(1 for r in results if r.outcome in _FAILED)
    if failed == 0:
        return "ok"
    return "failed" if failed == len(results) else "partial"


def _error_element(parent: etree._Element, error: XmlApiError) -> None:
    from lxml import etree

    element = etree.SubElement(parent, "error", code=_clean(error.code))
    if error.action is not None:
        element.set("action", str(error.action))
    element.text = _clean(error.message)


def build_response(tx_id: str | None, results: Iterable[ActionResult], *,
                   error: XmlApiError | None = None) -> bytes:
    """The response document (docs/xml-api.md): overall status, then one <result> per action
    with its outcome and correlation id or a structured error; or the transaction's error."""
    from lxml import etree

    results = list(results)
    root = etree.Element(RESPONSE_ROOT, version=VERSION)
    if tx_id:
        etree.SubElement(root, "transaction-id").text = _clean(tx_id)
    etree.SubElement(root, "status").text = _status(results, error)
    if error is not None:
        _error_element(root, error)
    for result in results:
        element = etree.SubElement(root, "result", index=str(result.index), action=result.kind)
        element.set("alert-id", _clean(result.alert_id))
        etree.SubElement(element, "outcome").text = result.outcome
        if result.correlation_id:
            etree.SubElement(element, "correlation-id").text = _clean(result.correlation_id)
        if result.error is not None:
            _error_element(element, result.error)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def response_text(tx_id: str | None, results: Iterable[ActionResult], *,
                  error: XmlApiError | None = None) -> str:
    """A readable text part to send beside the XML response."""
    results = list(results)
    lines = [f"mailbridge transaction {tx_id or '(no transaction id)'}: "
             f"{_status(results, error)}"]
    if error is not None:
        lines.append(f"Refused: {error.code}: {error.message}")
    for r in results:
        line = f"{r.index}. {r.kind} {r.alert_id}: {r.outcome}"
        if r.correlation_id:
            line += f" (correlation id {r.correlation_id})"
        if r.error is not None:
            line += f" - {r.error.code}: {r.error.message}"
        lines.append(line)
    return "\n".join(lines) + "\n"
