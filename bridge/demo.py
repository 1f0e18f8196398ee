"""`mailbridge demo` / `make demo`: the whole pipeline on the bundled samples.

Starts the PSA simulator (and a local SMTP sink, when aiosmtpd is installed) on loopback,
puts `samples/*.eml` into a temporary Maildir in file-name order (one minute apart), runs one
pass of the real pipeline, and prints every message's outcome and the tickets with their
histories as the simulator recorded them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bridge.config import settings_from_dict
from bridge.operator.httpserve import ThreadedServer, free_port

ROOT = Path(__file__).resolve().parents[1]

CATALOGUE = {
    "servers": ["Host Down", "Service Critical", "Service Warning", "Disk Space"],
    "backup": ["Backup Failed", "Backup Warning"],
    "network": ["Firewall Alert", "Interface Down"],
    "monitoring": ["Problem", "Trigger"],
    "rmm": ["Agent Offline", "Patch Failed", "Alert"],
    "storm": ["Alert Storm"],
    "test": ["Test Alert"],
}


def accounts_file(rules_dir: Path) -> Path | None:
    for candidate in sorted(rules_dir.parent.glob("accounts.*")) + sorted(
            rules_dir.glob("accounts.*")):
        return candidate
    return None


def demo_settings(work: Path, psa_url: str, smtp_port: int | None,
                  rules_dir: Path = ROOT / "rules") -> Any:
    data: dict[str, Any] = {
        "store": {"path": str(work / "mailbridge.db")},
        "maildir": [{"name": "demo", "path": str(work / "Maildir")}],
        "psa": {"base_url": psa_url, "client_id": "demo-client",
                "client_secret": "demo-secret", "organization_oem_token": "demo-org-token",
                "integration_id": "demo-integration", "rate_limit": 200.0},
        "catalogue": [{"name": k, "alert_types": v} for k, v in CATALOGUE.items()],
        "rules": {"directory": str(rules_dir)},
        "routing": {"internal_address": "support@msp.example",
                    "own_addresses": ["alerts@msp.example"]},
        "ates": {"sources": ["XYZ Monitoring Application", "Datto RMM"]},
        "auth": {"authserv_ids": ["mx.msp.example"]},
        "storm": {"storm_product_group": "storm", "storm_alert_type": "Alert Storm"},
        "http": {"enabled": False},
    }
    accounts = accounts_file(rules_dir)
    if accounts is not None:
        data["rules"]["accounts"] = str(accounts)
    if smtp_port is not None:
        data["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                        "from_address": "alerts@msp.example"}
    return settings_from_dict(data)


class _Sink:
    """A local SMTP server that keeps what it is sent (aiosmtpd), so forwards are real."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], str]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content.decode("utf-8", "replace")))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def load_samples(maildir: Path, samples: list[Path], start: float) -> None:
    from bridge.sources.maildir import ensure_maildir

    ensure_maildir(maildir)
    for i, sample in enumerate(samples):
        target = maildir / "new" / f"{int(start)}.{i:04d}.demo"
        shutil.copyfile(sample, target)
        os.utime(target, (start + 60 * i, start + 60 * i))


def run_demo(keep: Path | None = None, echo: Callable[[str], None] = print,
             samples_dir: Path = ROOT / "samples") -> int:
    from bridge.psa_sim import create_app, load_partner

    work = keep or Path(tempfile.mkdtemp(prefix="mailbridge-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    partner = load_partner(Path(__file__).parent / "psa_sim" / "default_partner.toml")
    sim = ThreadedServer(create_app(partner)).start()
    try:
        sink = _Sink()
    except ImportError:
        sink = None
    try:
        settings = demo_settings(work, sim.url, sink.port if sink else None)
        samples = sorted(samples_dir.glob("*.eml"))
        load_samples(Path(settings.maildir[0].path), samples, time.time() - 60 * len(samples))
        echo(f"mailbridge demo: {len(samples)} sample alerts -> PSA simulator at {sim.url}")
        started = time.time() - 1  # outcomes recorded from here on are the demo's
        code = asyncio.run(_one_pass(settings))
        _report(settings, samples, echo)
        asyncio.run(_print_tickets(settings, echo))
        if sink is not None:
            echo(f"\nMail sent by mailbridge (to the local SMTP sink): {len(sink.messages)}")
            for mail_from, rcpts, content in sink.messages:
                subject = next((line[9:] for line in content.splitlines()
                                if line.lower().startswith("subject: ")), "")
                echo(f"  to {', '.join(rcpts)}: {subject}")
        echo(f"\nstore: {settings.store.path} (inspect with `mailbridge events`)"
             if keep else "")
        echo(_summary(settings, started))
        return 0 if code in (0, 3) else code
    finally:
        if sink is not None:
            sink.stop()
        sim.stop()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _summary(settings: Any, since: float) -> str:
    from bridge.cli.output import store_summary
    from bridge.store import Store

    store = Store(settings.store.path)
    try:
        return store_summary(store, since)
    finally:
        store.close()


async def _one_pass(settings: Any) -> int:
    from bridge.daemon import Bridge

    bridge = Bridge(settings)
    try:
        return await bridge.run_once()
    finally:
        await bridge.close()


def _report(settings: Any, samples: list[Path], echo: Callable[[str], None]) -> None:
    from bridge.store import Store

    store = Store(settings.store.path)
    rows = store.messages_in_arrival_order()
    names = {f"{i:04d}": s.name for i, s in enumerate(samples)}
    echo("\nMessages:")
    for r in rows:
        name = names.get((r["source_uid"] or "").split(".")[1] if r["source_uid"] else "", "?")
        echo(f"  {name:<38} {(r['outcome'] or r['state']):<18} {r['reason'] or ''}")
    store.close()


async def _print_tickets(settings: Any, echo: Callable[[str], None]) -> None:
    from bridge.assembly import build_peers

    peers = build_peers(settings)
    assert peers.psa is not None  # the demo's config always has the simulator
    try:
        tickets = await peers.psa.list_alerts()
    finally:
        await peers.aclose()
    echo(f"\nTickets in the PSA simulator: {len(tickets)}")
    for t in tickets:
        cid = t.get("correlationId") or t.get("correlationID")
        echo(f"  [{t.get('status', '?')}] {t.get('title')}  (account {t.get('accountId')},"
             f" {t.get('productGroup')}/{t.get('alertType')}, correlationId {cid})")
        for h in t.get("history", []):
            text = str(h.get("summary") or h.get("title") or "")
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            echo(f"      - {h.get('incidentStatus') or h.get('action'):<8} {first[:90]}")
