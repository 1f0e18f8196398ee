"""Helpers shared by the end-to-end tests: a config file for a temporary installation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
MAILBRIDGE = str(Path(sys.executable).parent / "mailbridge")

CATALOGUE = """
[[catalogue]]
name = "servers"
alert_types = ["Host Down", "Service Critical", "Service Warning", "Disk Space"]
[[catalogue]]
name = "backup"
alert_types = ["Backup Failed", "Backup Warning"]
[[catalogue]]
name = "network"
alert_types = ["Firewall Alert", "Interface Down"]
[[catalogue]]
name = "monitoring"
alert_types = ["Problem", "Trigger"]
[[catalogue]]
name = "rmm"
alert_types = ["Agent Offline", "Patch Failed", "Alert"]
[[catalogue]]
name = "storm"
alert_types = ["Alert Storm"]
[[catalogue]]
name = "test"
alert_types = ["Test Alert"]
"""


def store_and_psa(tmp: Path, psa: Any) -> str:
    """The [store] and [psa] sections every test config shares: a store in `tmp`, the
    simulator's demo partner at `psa.url`."""
    return f"""
[store]
path = "{tmp / 'mailbridge.db'}"

[psa]
base_url = "{psa.url}"
client_id = "demo-client"
client_secret = "demo-secret"
organization_oem_token = "demo-org-token"
integration_id = "demo-integration"
rate_limit = 500.0
timeout = 5.0
"""


def write_config(tmp: Path, psa: Any, *, smtp_port: int | None = None, extra: str = "",
                 maildir: bool = False, imap: str = "") -> Path:
    """A config for the shipped rules and the demo partner, everything else in `tmp`."""
    smtp = (f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
            f'from_address = "alerts@msp.example"\n') if smtp_port else ""
    md = f'\n[[maildir]]\nname = "test"\npath = "{tmp / "Maildir"}"\n' if maildir else ""
    text = store_and_psa(tmp, psa) + f"""
[rules]
directory = "{ROOT / 'rules'}"
accounts = "{ROOT / 'rules' / 'accounts.csv'}"

[routing]
internal_address = "support@msp.example"
own_addresses = ["alerts@msp.example"]

[ates]
sources = ["XYZ Monitoring Application", "Datto RMM"]

[auth]
authserv_ids = ["mx.msp.example"]

[http]
enabled = false
{smtp}{md}{imap}{extra}
{CATALOGUE}
"""
    path = tmp / "config.toml"
    path.write_text(text)
    return path


def cli(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([MAILBRIDGE, *args], input=stdin, capture_output=True,
                          timeout=timeout)


def outcomes(db: Path) -> dict[int, tuple[str | None, str | None]]:
    from bridge.store import Store

    s = Store(db)
    try:
        return {r["id"]: (r["outcome"], r["reason"]) for r in
                s.query("SELECT id, outcome, reason FROM messages ORDER BY id")}
    finally:
        s.close()
