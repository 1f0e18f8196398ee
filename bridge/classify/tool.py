"""`[[tool]]`: the shared defaults of one monitoring tool, and its sender as a detection rule.

A tool's keys are defaults its rules inherit: `merged()` lays a rule's own table over the
tool's (a rule's key replaces the tool's whole — lists and the `status` table included —
except `capture`, where the tool's entries run first, then the rule's). The tool's senders
detect its mail after every `[[detect]]` rule failed (`Tool.matcher`, indexed like a rule's),
and its `account` tables become account rules `<tool>/account-N` for its mail only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.classify.matchers import Matcher, SenderPattern
from bridge.classify.reader import TableReader

# Keys a skip rule takes from its tool (the rest are about tickets, which a skip never makes).
SKIP_INHERITS = ("sender", "body")


@dataclass(frozen=True)
class Tool:
    NAME: ClassVar[str] = "tool"
    name: str
    file: str
    line: int | None
    defaults: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    matcher: Matcher = Matcher()
    had_errors: bool = False
    capture_names: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.file}:{self.name}"

    @property
    def senders(self) -> tuple[SenderPattern, ...]:
        return self.matcher.senders

    def index_keys(self) -> tuple[str, tuple[str, ...]] | None:
        return self.matcher.index_keys() if self.senders else None

    def merged(self, own: dict[str, Any], kind: str) -> tuple[dict[str, Any], frozenset[str]]:
        """(the rule's table over the tool's defaults, the keys it inherited)."""
        if kind == "skip":
            base = {k: v for k, v in self.defaults.items() if k in SKIP_INHERITS}
        else:
            base = dict(self.defaults)
            if "status" in own or any(k in own for k in ("open", "resolved", "update",
                                                          "status_in")):
                for k in ("status", "open", "resolved", "update", "status_in"):
                    base.pop(k, None)
        inherited = frozenset(k for k in base if k not in own)
        table = {**base, **own}
        if kind != "skip" and "capture" in base and "capture" in own:
            mine, theirs = own["capture"], base["capture"]
            table["capture"] = [*(theirs if isinstance(theirs, list) else [theirs]),
                                *(mine if isinstance(mine, list) else [mine])]
        table.pop("tool", None)
        return table, inherited


def account_tables(r: TableReader) -> list[dict[str, Any]]:
    """The tool's `account` key: one table or a list of them."""
    raw = r.table.get("account")
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(t, dict) for t in items):
        r.problem("account must be a table or a list of tables with the keys of [[account]] "
                  "(without name and for_rules)", "account")
        return []
    bad = [k for t in items for k in t if k in ("name", "for_rules")]
    if bad:
        r.problem(f"a tool's account tables take no {', '.join(sorted(set(bad)))} (they are "
                  "named <tool>/account-N and apply to the tool's mail)", "account")
        return []
    return list(items)
