"""Reconcile open correlations with the PSA's own ticket list (seed 000 "list tickets").

A technician may close a ticket in the PSA; mailbridge's correlation would then stay open and
the next occurrence would be appended to a closed ticket. `reconcile` compares: an open
correlation whose ticket is closed or missing at the PSA is a difference; with `fix` it is
closed locally (recorded as an event), so the next alert creates a new ticket. Open tickets the
PSA has but mailbridge does not know are reported only. The daemon runs it hourly with `fix`;
`mailbridge reconcile [--fix]` runs it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any


@dataclass
class ReconcileReport:
    checked: int = 0
    closed_at_psa: list[dict[str, Any]] = field(default_factory=list)
    missing_at_psa: list[dict[str, Any]] = field(default_factory=list)
    unknown_open: list[dict[str, Any]] = field(default_factory=list)
    fixed: int = 0

    @property
    def differences(self) -> int:
        return len(self.closed_at_psa) + len(self.missing_at_psa) + len(self.unknown_open)


def compare(open_rows: list[dict[str, Any]], known_ids: set[str],
            tickets: list[dict[str, Any]]) -> ReconcileReport:
    """Pure: our open correlations (confirmed creates only) against the PSA's tickets."""
    by_id: dict[str, dict[str, Any]] = {}
    for t in tickets:
        for cid in [t.get("correlationId") or t.get("correlationID"), *t.get("aliases", [])]:
            if cid:
                by_id[str(cid)] = t
    report = ReconcileReport(checked=len(open_rows))
    for row in open_rows:
        ticket = by_id.get(row["correlation_id"])
        if ticket is None:
            report.missing_at_psa.append(row)
        elif str(ticket.get("status", "")).lower() in ("closed", "resolved", "complete"):
            report.closed_at_psa.append(row)
    for t in tickets:
        cid = str(t.get("correlationId") or t.get("correlationID") or "")
        if str(t.get("status", "")).lower() == "open" and cid and cid not in known_ids and \
                not set(t.get("aliases", [])) & known_ids:
            report.unknown_open.append({"correlation_id": cid, "title": t.get("title")})
    return report

if TYPE_CHECKING:
    from bridge.deliver.psa import PsaClient
    from bridge.store.db import AsyncStore


async def reconcile(store: AsyncStore, psa: PsaClient, fix: bool = False) -> ReconcileReport:
    """Raises PsaError when the list fails."""
    open_rows = await store.confirmed_open_correlations()
    known = await store.correlation_ids()
    report = compare(open_rows, known, await psa.list_alerts())
    if fix:
        for row in report.closed_at_psa + report.missing_at_psa:
            await store.close_reconciled(row["correlation_id"], row["alert_key"],
                                         "ticket closed or missing at the PSA")
            report.fixed += 1
    return report
