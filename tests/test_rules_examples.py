"""Every worked example of docs/rules.md (docs/examples/rules/*.toml) loads on its own
without a problem and does to its mails what the page says.

Each mail goes through the real MIME parser; the accounts are the shipped rules/accounts.csv.
"""

from __future__ import annotations

import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.classify import RuleSet, check_ruleset, classify, load_ruleset
from bridge.models import Kind
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE
from tests.test_samples import ACCOUNTS, CTX, ROOT

EXAMPLES = ROOT / "docs" / "examples" / "rules"


def mail(sender: str, subject: str, body: str = "", html: str | None = None,
         **headers: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, "alerts@msp.example", subject
    m["Date"], m["Message-ID"] = "Tue, 04 Mar 2025 11:02:11 +0000", "<example@msp.example>"
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(body or "(no text)")
    if html is not None:
        m.add_alternative(html, subtype="html")
    return bytes(m)


ICINGA = "icinga@mon.msp.example"
KUMA = "kuma@uptime.msp.example"
# (mail, kind, rule, account, status, alert key, alert type, title); None: not checked
CASES: dict[str, list[tuple[bytes, Kind, str | None, tuple[str | None, ...]]]] = {
    "10-tool-block.toml": [
        (mail(ICINGA, "[PROBLEM] acme/web01 - HTTP is CRITICAL!"), Kind.ALERT, "icinga-service",
         ("ACME-001", "open", "icinga:ACME-001:web01:HTTP", "Service Critical",
          "HTTP on web01 is CRITICAL")),
        (mail(ICINGA, "[RECOVERY] acme/web01 - HTTP is OK!"), Kind.ALERT, "icinga-service",
         ("ACME-001", "resolved", "icinga:ACME-001:web01:HTTP", None, None)),
        (mail(ICINGA, "[PROBLEM] acme/db02 is DOWN!"), Kind.ALERT, "icinga-host",
         ("ACME-001", "open", "icinga:ACME-001:db02", "Host Down", "Host db02 is DOWN")),
        (mail(ICINGA, "[DOWNTIMESTART] acme/web01 - HTTP"), Kind.SKIPPED, "icinga-downtime", ()),
        (mail(ICINGA, "Icinga weekly report"), Kind.UNMATCHED, None, ()),
        (mail("someone@acme.example", "[PROBLEM] acme/web01 - HTTP is CRITICAL!"),
         Kind.REGULAR, None, ()),
    ],
    "20-captures-and-keys.toml": [
        (mail("librenms@nms.msp.example", "Alert for device core-sw01 - Port status up/down",
              "Device: core-sw01\nPort: Gi0/1\nLocation: Globex Corporation\n"),
         Kind.ALERT, "librenms", ("GLOBEX-002", "open", "librenms:GLOBEX-002:core-sw01:Gi0/1",
                                  None, "core-sw01 Gi0/1: Alert for device core-sw01 - Port "
                                  "status up/down")),
        (mail("librenms@nms.msp.example", "Alert for device core-sw01 - Devices up/down",
              "Device: core-sw01\nLocation: Globex Corporation\n"),
         Kind.ALERT, "librenms", ("GLOBEX-002", "open", "librenms:GLOBEX-002:core-sw01")),
        (mail("librenms@nms.msp.example", "Recovery for device core-sw01 - Devices up/down",
              "Device: core-sw01\nLocation: Globex Corporation\n"),
         Kind.ALERT, "librenms", ("GLOBEX-002", "resolved", "librenms:GLOBEX-002:core-sw01")),
        (mail("librenms@nms.msp.example", "LibreNMS daily summary"), Kind.REGULAR, None, ()),
    ],
    "30-maps.toml": [
        (mail("nagios@mon2.msp.example", "** PROBLEM Service Alert: acme/web01/HTTP is CRITICAL **"),
         Kind.ALERT, "nagios-states", ("ACME-001", "open", "nagios2:ACME-001:web01:HTTP",
                                       "Service Critical")),
        (mail("nagios@mon2.msp.example", "** PROBLEM Service Alert: acme/web01/Disk is WARNING **"),
         Kind.ALERT, "nagios-states", ("ACME-001", "open", None, "Service Warning")),
        (mail("nagios@mon2.msp.example", "** PROBLEM Service Alert: acme/web01/Disk is UNKNOWN **"),
         Kind.ALERT, "nagios-states", ("ACME-001", "open", None, "Service Critical")),
    ],
    "40-status.toml": [
        (mail("checkmk@cmk.msp.example", "Checkmk: acme/web01 HTTP OK -> CRIT"), Kind.ALERT,
         "checkmk", ("ACME-001", "open", "checkmk:ACME-001:web01:HTTP", None,
                     "HTTP on web01: OK -> CRIT")),
        (mail("checkmk@cmk.msp.example", "Checkmk: acme/web01 HTTP CRIT -> OK"), Kind.ALERT,
         "checkmk", ("ACME-001", "resolved", "checkmk:ACME-001:web01:HTTP")),
    ],
    "50-headers.toml": [
        (mail("netdata@web01.acme.example", "web01 needs attention, disk_space_usage = 97%",
              X_Netdata_Alert="disk_space_usage", X_Netdata_Status="CRITICAL"),
         Kind.ALERT, "netdata", ("ACME-001", "open", "netdata:ACME-001:web01:disk_space_usage",
                                 "Disk Space", "disk_space_usage on web01 is CRITICAL")),
        (mail("netdata@web01.acme.example", "web01 recovered, disk_space_usage = 61%",
              X_Netdata_Alert="disk_space_usage", X_Netdata_Status="CLEAR"),
         Kind.ALERT, "netdata", ("ACME-001", "resolved", "netdata:ACME-001:web01:disk_space_usage")),
        (mail("netdata@web01.acme.example", "hello"), Kind.REGULAR, None, ()),
    ],
    "60-conditions.toml": [
        (mail(KUMA, "[🔴 Down] web: Keyword not found (200 - OK)", "Customer: Acme Corp",
              X_Kuma_Monitor="web"), Kind.ALERT, "uptime-kuma", ("ACME-001", "open")),
        (mail(KUMA, "[✅ Up] web: 200 - OK", "Customer: Acme Corp", X_Kuma_Monitor="web"),
         Kind.ALERT, "uptime-kuma", ("ACME-001", "resolved")),
        (mail(KUMA, "[Down] db: timeout", "Customer: Acme Corp"), Kind.ALERT, "uptime-kuma",
         ("ACME-001", "open")),
        (mail(KUMA, "[down] db: a test by hand", "Customer: Acme Corp"), Kind.REGULAR, None, ()),
    ],
    "70-senders.toml": [
        (mail("icinga@mon2.msp.example", "Monit alert -- Does not exist nginx", "Host: acme"),
         Kind.ALERT, "monit", ("ACME-001", "open", "monit:ACME-001:nginx")),
        (mail("monit@mon.msp.example", "Monit alert -- Exists nginx", "Host: acme"),
         Kind.ALERT, "monit", ("ACME-001", "resolved", "monit:ACME-001:nginx")),
        (mail("icinga@mon.msp.example", "Monit alert -- Exists nginx", "Host: acme"),
         Kind.REGULAR, None, ()),
    ],
    "80-body.toml": [
        (mail("root@pve.msp.example", "vzdump backup status (Acme Corp): backup failed",
              "Please use an HTML mail reader.",
              "<html><body><p>Node: pve1</p><p>Backup of VM 100 failed</p></body></html>"),
         Kind.ALERT, "proxmox-backup", ("ACME-001", "open", None, "Backup Failed",
                                        "Proxmox backup on pve1: vzdump backup status (Acme "
                                        "Corp): backup failed")),
        (mail("root@pve.msp.example", "New software packages available (pve1)"),
         Kind.SKIPPED, "proxmox-updates", ()),
    ],
}


def load(tmp_path: Path, name: str) -> RuleSet:
    directory = tmp_path / "rules"
    directory.mkdir()
    shutil.copy(EXAMPLES / name, directory / name)
    assert check_ruleset(directory, ACCOUNTS, CATALOGUE) == []
    return load_ruleset(directory, ACCOUNTS, CATALOGUE)


def test_every_example_has_cases() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(tmp_path: Path, name: str) -> None:
    rules = load(tmp_path, name)
    for raw, kind, rule, alert in CASES[name]:
        c = classify(parse(raw), rules, CTX)
        assert (c.kind, c.rule) == (kind, f"{name}:{rule}" if rule else None), c.steps
        if c.alert is None:
            assert not alert
            continue
        got = (c.alert.account_id, c.alert.status, c.alert.alert_key, c.alert.alert_type,
               c.alert.title)
        assert all(w is None or w == g for w, g in zip(alert, got)), (got, c.steps)
