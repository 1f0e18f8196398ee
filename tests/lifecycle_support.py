"""Shared by the lifecycle tests (issue 15): Nagios mail, a rules copy with a minimum duration,
a whole mailbridge on an injected clock, and a model of the documented lifecycle written apart
from `bridge/decide/core.py` (docs/storm.md is its specification)."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import Settings, load_settings
from bridge.daemon import Bridge
from bridge.models import RawMessage
from tests.helpers import ROOT, write_config

_n = itertools.count(1)


def nagios(host: str, kind: str = "PROBLEM", at: float = 0.0, group: str = "acme",
           service: str = "HTTP") -> RawMessage:
    """A Nagios service notification as the MX delivers it (DKIM-verified)."""
    n = next(_n)
    state = "OK" if kind == "RECOVERY" else "CRITICAL"
    raw = (
        "Authentication-Results: mx.msp.example;\r\n"
        "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\r\n"
        "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\r\n"
        # Results count only above our MX's own Received header (RFC 8601 §5).
        "Received: from monitor.msp.example (monitor.msp.example [192.0.2.10])\r\n"
        "\tby mx.msp.example (Postfix) with ESMTPS id LIFE\r\n"
        "\tfor <alerts@msp.example>; Tue, 04 Mar 2025 09:00:00 +0000\r\n"
        "From: Nagios <nagios@monitor.msp.example>\r\n"
        "To: alerts@msp.example\r\n"
        f"Subject: ** {kind} Service Alert: {group}/{host}/{service} is {state} **\r\n"
        f"Message-ID: <life.{n}@monitor.msp.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        "Auto-Submitted: auto-generated\r\n\r\n"
        f"***** Nagios *****\r\n\r\nNotification Type: {kind}\r\n\r\nService: {service}\r\n"
        f"Host: {host}\r\nState: {state}\r\n"
    ).encode()
    return RawMessage(raw, "imap:life", f"1:{n}", at)


def rules_with_min_duration(tmp: Path, seconds: float) -> Path:
    """A copy of the shipped rules whose Nagios service rule sets `min_duration`."""
    target = tmp / "rules"
    shutil.copytree(ROOT / "rules", target)
    path = target / "10-nagios.toml"
    text = path.read_text()
    marker = 'name = "nagios-service"\n'
    assert marker in text
    path.write_text(text.replace(marker, f"{marker}min_duration = {seconds}\n", 1))
    return target


def lifecycle_config(tmp: Path, psa: Any, *, min_duration: float = 0.0,
                     **storm: Any) -> Path:
    """A config for the simulator (or any PSA URL) with a `[storm]` section of `storm`."""
    extra = "\n[storm]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in storm.items())
    path = write_config(tmp, psa, extra=extra)
    if min_duration:
        rules = rules_with_min_duration(tmp, min_duration)
        path.write_text(path.read_text().replace(f'directory = "{ROOT / "rules"}"',
                                                 f'directory = "{rules}"'))
    return path


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class ClockedBridge:
    """Driving a `Bridge` on an injected clock (shared by the lifecycle and storm rigs):
    stage mail and run a pass, step time through held rows, settle."""

    clock: Clock
    bridge: Bridge
    store: Any

    async def stage_and_pass(self, msgs: list[RawMessage], now: float | None) -> list[int]:
        if now is not None:
            self.clock.now = max(self.clock.now, now)
        ids = [r.id for r in self.store.stage_many(msgs)]
        await self.bridge.run_once()
        return ids

    async def deliver_at(self, t: float) -> None:
        """Time passes up to `t`: every held row due on the way goes out when it is due."""
        while True:
            due = self.store.next_outbox_due()
            if due is None or due > t:
                break
            self.clock.now = max(self.clock.now, due)
            await self.bridge.run_once()
        self.clock.now = max(self.clock.now, t)
        await self.bridge.run_once()

    async def settle(self, rounds: int = 100) -> None:
        """Quiescence: every hold falls due and is delivered."""
        for _ in range(rounds):
            await self.bridge.run_once()
            due = self.store.next_outbox_due()
            if due is None:
                return
            self.clock.now = max(self.clock.now, due) + 0.001
        raise AssertionError("the outbox did not settle")


class Mailbridge(ClockedBridge):
    """The daemon's `Bridge` on an injected clock: stage, run a pass, step through holds."""

    def __init__(self, settings: Settings, config: Path, now: float, psa: Any = None):
        self.clock = Clock(now)
        self.settings = settings
        if psa is None:
            self.bridge = Bridge(settings, config_path=config, clock=self.clock,
                                 worker="lifecycle")
        else:  # an in-process PSA in place of the real client (the model-based examples)
            from bridge.assembly import build_peers
            from bridge.deliver.peers import Peers

            def peers(s: Settings) -> Peers:
                real = build_peers(s)
                return Peers(psa, real.smtp, real.webhooks)

            self.bridge = Bridge(settings, config_path=config, clock=self.clock, peers=peers,
                                 worker="lifecycle")
        self.store = self.bridge.sync_store

    @classmethod
    def from_config(cls, config: Path, now: float, psa: Any = None) -> "Mailbridge":
        return cls(load_settings(config), config, now, psa)

    async def feed(self, msgs: list[RawMessage], now: float) -> list[int]:
        return await self.stage_and_pass(msgs, now)

    def key_tickets(self) -> dict[str, list[str]]:
        """correlationIds of each alert key's own tickets (damped ones never were)."""
        out: dict[str, list[str]] = {}
        for r in self.store.query("SELECT alert_key, correlation_id FROM correlations WHERE"
                                  " state != 'damped' AND alert_key NOT LIKE 'storm:%'"
                                  " ORDER BY opened_at"):
            out.setdefault(r["alert_key"], []).append(r["correlation_id"])
        return out

    def storm_membership(self) -> dict[str, str]:
        """alert key -> storm correlationId, for keys still open on a storm ticket."""
        return {r["alert_key"]: r["storm_id"] for r in self.store.query(
            "SELECT alert_key, storm_id FROM storm_members WHERE state='open'")}

    def outcomes(self) -> dict[int, str | None]:
        return {r["id"]: r["o"] for r in self.store.query(
            "SELECT id, coalesce(outcome, state) AS o FROM messages")}

    async def close(self) -> None:
        await self.bridge.close()


# -- the model ----------------------------------------------------------------------------------


@dataclass
class _Ticket:
    opened: float
    open_due: float | None = None       # the OPEN is held until then (min duration, group wait)
    resolve_due: float | None = None    # a RESOLVED waits until then
    closed: bool = False
    update_first: float | None = None   # the waiting append, [first, first + window)


@dataclass
class Policy:
    coalesce_window: float = 300.0
    resolve_delay: float = 120.0
    burst_threshold: int = 3
    burst_window: float = 30.0
    group_wait: float = 30.0
    min_duration: float = 0.0


@dataclass
class Model:
    """The lifecycle of docs/storm.md for alerts that never reach a storm ticket: per key, how
    many tickets open and whether the last one is open at quiescence. Written from the docs,
    not from decide/core.py: state is per key, time is arrival time, windows are half-open."""

    policy: Policy
    tickets: dict[str, list[_Ticket]] = field(default_factory=dict)
    new_alerts: list[float] = field(default_factory=list)  # arrivals of new alert keys

    def _current(self, key: str) -> _Ticket | None:
        ts = self.tickets.get(key)
        return ts[-1] if ts and not ts[-1].closed else None

    def mail(self, key: str, kind: str, t: float) -> str:
        """Feed one mail (in arrival order); returns what the docs say becomes of it."""
        p, cur = self.policy, self._current(key)
        if cur is not None and cur.resolve_due is not None and t >= cur.resolve_due:
            cur.closed, cur = True, None  # its resolve was due: by arrival time it closed
        if kind == "RECOVERY":
            if cur is None:
                return "nothing-to-resolve"
            if cur.open_due is not None and t < cur.open_due:
                self.tickets[key].pop()  # healed within its hold: never a ticket
                return "damped"
            if cur.resolve_due is not None:
                return "coalesced"
            if p.resolve_delay <= 0:
                cur.closed = True
                return "resolved"
            due = t + p.resolve_delay
            if cur.update_first is not None and p.coalesce_window > 0:
                due = max(due, cur.update_first + p.coalesce_window)
            cur.resolve_due = due
            return "pending"
        if cur is not None:
            cur.resolve_due = None  # a flap: the waiting resolve is cancelled
            if cur.update_first is not None and t - cur.update_first < p.coalesce_window:
                return "coalesced"
            cur.update_first = t
            return "appended"
        burst = sum(1 for a in self.new_alerts if t - p.burst_window < a <= t) \
            >= p.burst_threshold
        self.new_alerts.append(t)
        hold = max(p.min_duration, p.group_wait if burst else 0.0)
        self.tickets.setdefault(key, []).append(_Ticket(t, t + hold if hold > 0 else None))
        return "created"

    def expected(self) -> dict[str, tuple[int, bool]]:
        """Per key: tickets opened, and whether one is open at quiescence."""
        return {k: (len(ts), bool(ts) and not ts[-1].closed and ts[-1].resolve_due is None)
                for k, ts in self.tickets.items()}
