"""What the rule-pack tests share (no tests here): an installation that enables packs, the
simulator partner that knows the packs' neutral vocabulary, and sample mail as the MSP's MX
delivers it."""

from __future__ import annotations

import email
import email.utils
import json
import sqlite3
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.classify.rulepacks import PACKS_ROOT
from tests.fixtures.psa import SimulatorServer
from tests.helpers import store_and_psa

ACCOUNTS_CSV = """\
id,name,aliases,foreign_ids,senders
ACME-001,Acme Corp,Acme,acme,@acme.example
GLOBEX-002,Globex Corporation,Globex,globex,@globex.example
"""

# The neutral vocabulary of docs/packs.md, and an MSP whose catalogue names things otherwise.
NEUTRAL = {"monitoring": ["Service Critical", "Service Warning", "Host Down", "Device Down",
                          "Backup Failed", "Backup Warning", "Security Alert"]}
MSP = {"infrastructure": ["Critical", "Warning", "Server Down"]}


def catalogue_toml(groups: dict[str, list[str]]) -> str:
    return "".join(f'\n[[catalogue]]\nname = "{name}"\nalert_types = {json.dumps(types)}\n'
                   for name, types in groups.items())


def partner_file(tmp: Path) -> Path:
    """The default partner, with the neutral monitoring group and the MSP's own group."""
    text = (Path(__file__).resolve().parents[1] / "bridge/psa_sim/default_partner.toml").read_text()
    text = text.replace('alert_types = ["Problem", "Trigger"]',
                        'alert_types = ["Problem", "Trigger", "Service Critical", '
                        '"Service Warning", "Host Down", "Device Down", "Backup Failed", '
                        '"Backup Warning", "Security Alert"]')
    text += ('\n[[product_groups]]\nname = "infrastructure"\n'
             'alert_types = ["Critical", "Warning", "Server Down"]\n'
             '  [[product_groups.rules]]\n  id = "infra-all"\n  queue = "Infra"\n'
             '  priority = "High"\n')
    path = tmp / "partner.toml"
    path.write_text(text)
    return path


@pytest.fixture
def pack_psa(tmp_path: Path) -> Iterator[SimulatorServer]:
    server = SimulatorServer(partner_file(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


def pack_config(tmp: Path, psa: Any, packs: list[str], *, smtp_port: int | None = None,
                catalogue: dict[str, list[str]] | None = None, extra: str = "",
                rules: dict[str, str] | None = None) -> Path:
    """A config with an empty rule directory (or `rules`), the enabled packs and an accounts
    file; lifecycle holds off (no coalescing, no resolve delay) so each mail settles at once."""
    rule_dir = tmp / "rules"
    rule_dir.mkdir(exist_ok=True)
    for name, text in (rules or {}).items():
        (rule_dir / name).write_text(text)
    (tmp / "accounts.csv").write_text(ACCOUNTS_CSV)
    # Skipped mail is forwarded to the internal address, so there is always an [smtp] section
    # (`check` insists); port 9 when the test has no sink, as nothing is sent then.
    smtp = (f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port or 9}\nsecurity = "none"\n'
            'from_address = "alerts@msp.example"\n')
    text = store_and_psa(tmp, psa) + f"""
[rules]
directory = "{rule_dir}"
accounts = "{tmp / 'accounts.csv'}"
packs = {json.dumps(packs)}

[routing]
internal_address = "support@msp.example"
own_addresses = ["alerts@msp.example"]

[auth]
authserv_ids = ["mx.msp.example"]

[ates]
sources = ["Kaseya"]  # the kaseya-vsa pack's token source

[storm]
resolve_delay = 0.0
coalesce_window = 0.0

[http]
enabled = false
{smtp}{extra}
{catalogue_toml(catalogue or NEUTRAL)}
"""
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def recovers(pack: str) -> bool:
    """False when the pack declares `recovery = false`: the tool never mails a recovery."""
    data = tomllib.loads((PACKS_ROOT / pack / "samples" / "expected.toml").read_text())
    return data.get("recovery", True) is not False


def samples(pack: str) -> list[dict[str, Any]]:
    data = tomllib.loads((PACKS_ROOT / pack / "samples" / "expected.toml").read_text())
    return list(data.get("sample", []))


def delivered(raw: bytes, sender: str | None = None) -> bytes:
    """The sample as the MSP's MX hands it on: a trusted Authentication-Results (SPF pass for
    the From address) and the border Received header above the tool's own headers. `sender`
    replaces the From address (a pack mapped onto the MSP's own senders)."""
    head, sep, body = raw.partition(b"\n\n")
    if sender is not None:
        lines = [f"From: {sender}".encode() if line.lower().startswith(b"from:") else line
                 for line in head.split(b"\n")]
        raw = b"\n".join(lines) + sep + body
    frm = email.message_from_bytes(raw).get("From", "")
    addr = email.utils.parseaddr(str(frm))[1]
    trace = (f"Authentication-Results: mx.msp.example; spf=pass smtp.mailfrom={addr}\n"
             "Received: from relay.msp.example (relay.msp.example [192.0.2.25])\n"
             "\tby mx.msp.example (Postfix) with ESMTPS id 4Z1\n"
             "\tfor <alerts@msp.example>; Tue, 04 Mar 2025 09:00:00 +0000\n")
    return trace.encode() + raw


def recorded(db: Path) -> list[tuple[str | None, str | None, str | None]]:
    """(outcome, reason, alert key) of every message, in arrival order (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.execute(
            "SELECT outcome, reason, alert_key FROM messages ORDER BY id"))
