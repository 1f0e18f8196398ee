"""Alert mail for the benchmarks: variants of samples/*.eml that the shipped rules/ match.

`backlog(n, start, end)` makes `n` messages of a realistic mix — Nagios service and host alerts
(with the Authentication-Results header the Nagios rules require), Zabbix, PRTG, Veeam, Datto RMM
with an ATES token in its HTML part, FortiGate, N-sight HTML-only patch reports, and a few Veeam
warnings that the skip rules take — as *incidents*: a problem, sometimes repeats (some within the
5-minute coalescing window, some later), sometimes an acknowledgement, usually a recovery. Hosts,
services, jobs and event ids vary; every message has its own Message-ID. Arrival times are spread
over [start, end] (they become the messages' INTERNALDATE, i.e. mailbridge's arrival time).

`storm(n, sites, start, seconds)` makes `n` distinct new alerts spread over `sites` accounts
(the account directory for them comes from `storm_accounts_csv`), all within `seconds`.

`latency_alert(i)` is one unique Nagios problem (a new ticket) whose title names `i`.

Deterministic: the same seed gives the same mail.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from email.utils import formatdate

# (account name as rules find it, nagios host group / foreign id, veeam site prefix). Umbrella
# is left out: the demo partner has it unmapped on purpose (every call for it is a 404).
ACCOUNTS = [
    ("Acme Corp", "acme", "Acme HQ"),
    ("Globex Corporation", "1002", "Globex"),
    ("Initech", "initech", "Initech"),
    ("Soylent", "SOYLENT-DRMM-8841", "Soylent"),
]
# Senders' own domains (95-accounts.toml finds FortiGates by them).
DOMAINS = {"Acme Corp": "acme.example", "Globex Corporation": "globex.example",
           "Initech": "initech.example", "Umbrella Corp": "umbrella.example",
           "Soylent": "soylent.example"}
DATTO_CUSTOMER = {"Acme Corp": "acme", "Globex Corporation": "1002", "Initech": "initech",
                  "Umbrella Corp": "umbrella", "Soylent": "SOYLENT-DRMM-8841"}
SERVICES = ["HTTP", "HTTPS", "SSH", "Disk C", "Disk D", "CPU Load", "Memory", "SMTP", "DNS",
            "NTP", "MSSQL", "IIS AppPool", "Backup Agent", "Ping", "SNMP"]
ZBX_PROBLEMS = ["Free disk space is less than 10% on volume D:", "High CPU utilization",
                "Zabbix agent is not available", "Interface eth0: Link down",
                "Load average is too high", "MySQL: Service is down"]
PRTG_SENSORS = ["Ping", "HTTP", "SNMP Traffic", "Uptime", "Disk Free", "WMI CPU Load"]
DATTO_MONITORS = ["Disk usage C: above 90%", "CPU above 95% for 15 minutes",
                  "Antivirus definitions out of date", "Service Spooler stopped"]
FG_EVENTS = ["IPS attack blocked", "VPN tunnel down", "HA failover", "Admin login failed"]

# Incident families and their share of incidents.
FAMILIES = [("nagios-service", 30), ("nagios-host", 8), ("zabbix", 15), ("prtg", 14),
            ("veeam", 8), ("datto", 12), ("fortigate", 5), ("nsight", 5), ("veeam-warning", 3)]


def _date(t: float) -> str:
    return formatdate(t, usegmt=True)


def _received(host: str, t: float, ident: str) -> str:
    return (f"Received: from {host} ({host} [192.0.2.10])\n"
            f"\tby mx.msp.example (Postfix) with ESMTPS id {ident}\n"
            f"\tfor <alerts@msp.example>; {_date(t)}\n")


@dataclass
class Mail:
    raw: bytes
    at: float        # arrival time (INTERNALDATE)
    family: str
    key: str         # which incident it belongs to (for the report, not mailbridge)
    kind: str        # problem | repeat | ack | recovery | skip


class Factory:
    """Renders one message of a family; `n` makes every Message-ID unique."""

    def __init__(self, seed: int = 9) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def _mid(self, domain: str) -> str:
        self.n += 1
        return f"<bench.{self.n}.{self.rng.getrandbits(40):x}@{domain}>"

    def nagios_service(self, t: float, group: str, host: str, service: str, state: str) -> bytes:
        kind = {"CRITICAL": "PROBLEM", "OK": "RECOVERY", "ACK": "ACKNOWLEDGEMENT"}[state]
        shown = "CRITICAL" if state == "ACK" else state
        return (
            "Authentication-Results: mx.msp.example;\n"
            "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\n"
            "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\n"
            + _received("monitor.msp.example", t, f"N{self.n}") +
            "From: Nagios <nagios@monitor.msp.example>\nTo: alerts@msp.example\n"
            f"Subject: ** {kind} Service Alert: {group}/{host}/{service} is {shown} **\n"
            f"Date: {_date(t)}\nMessage-ID: {self._mid('monitor.msp.example')}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n"
            "Content-Transfer-Encoding: 7bit\nAuto-Submitted: auto-generated\n"
            f"X-Nagios-Notification-Type: {kind}\n\n"
            f"***** Nagios *****\n\nNotification Type: {kind}\n\nService: {service}\n"
            f"Host: {host}\nHost group: {group}\nAddress: 10.20.{self.n % 250}.{self.n % 200 + 1}\n"
            f"State: {shown}\n\nDate/Time: {_date(t)}\n\nAdditional Info:\n\n"
            f"{service} {shown} - check returned {self.rng.randint(0, 3)}\n").encode()

    def nagios_host(self, t: float, group: str, host: str, state: str) -> bytes:
        kind = {"DOWN": "PROBLEM", "UP": "RECOVERY"}[state]
        return (
            "Authentication-Results: mx.msp.example;\n"
            "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\n"
            "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\n"
            + _received("monitor.msp.example", t, f"N{self.n}") +
            "From: Nagios <nagios@monitor.msp.example>\nTo: alerts@msp.example\n"
            f"Subject: ** {kind} Host Alert: {group}/{host} is {state} **\n"
            f"Date: {_date(t)}\nMessage-ID: {self._mid('monitor.msp.example')}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n"
            "Auto-Submitted: auto-generated\n\n"
            f"***** Nagios *****\n\nNotification Type: {kind}\nHost: {host}\n"
            f"State: {state}\nAddress: 10.30.0.{self.n % 250}\n\nInfo:\n\n"
            f"PING {'CRITICAL - Packet loss = 100%' if state == 'DOWN' else 'OK - rta 0.4 ms'}\n"
        ).encode()

    def zabbix(self, t: float, account: str, host: str, problem: str, event: int,
               resolved: bool) -> bytes:
        subject = (f"Resolved in {self.rng.randint(1, 59)}m {self.rng.randint(0, 59)}s: "
                   if resolved else "Problem: ") + f"{problem} [{account}]"
        return (
            _received("zabbix.msp.example", t, f"ZBX.{event}") +
            "From: Zabbix <zabbix@zabbix.msp.example>\nTo: alerts@msp.example\n"
            f"Subject: {subject}\nDate: {_date(t)}\n"
            f"Message-ID: {self._mid('zabbix.msp.example')}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
            "Content-Transfer-Encoding: 8bit\nAuto-Submitted: auto-generated\n\n"
            + ("Problem has been resolved" if resolved else "Problem started") +
            f" at {_date(t)}\nProblem name: {problem}\nHost: {host}\nSeverity: High\n"
            f"Operational data: {self.rng.uniform(1, 99):.1f} %\n"
            f"Original problem ID: {event}\n").encode()

    def prtg(self, t: float, account: str, sensor: str, host: str, state: str) -> bytes:
        return (
            _received("prtg.msp.example", t, f"PRTG{self.n}") +
            "From: PRTG Network Monitor <prtg@prtg.msp.example>\nTo: alerts@msp.example\n"
            f"Subject: [PRTG] Alert for Site {account}, sensor {sensor} on device {host} is "
            f"{state}\nDate: {_date(t)}\nMessage-ID: {self._mid('prtg.msp.example')}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 7bit\nX-Mailer: PRTG Network Monitor 24.4\n\n"
            f"PRTG Network Monitor (PRTG-CORE)\n\nSite: {account}\nDevice: {host}\n"
            f"Sensor: {sensor}\nStatus: {state}\nLast message: "
            f"{'Destination host unreachable' if state == 'Down' else 'OK'}\n"
            f"Date/Time: {_date(t)}\n").encode()

    def veeam(self, t: float, site: str, job: str, state: str) -> bytes:
        tail = {"Failed": " 1 failed", "Success": "", "Warning": " 1 warning"}[state]
        b = "==veeam-boundary=="
        return (
            _received("backup.msp.example", t, f"VBR{self.n}") +
            "From: Veeam Backup & Replication <veeam@backup.msp.example>\n"
            "To: alerts@msp.example\n"
            f"Subject: [{state}] Backup job '{site} - {job}' (3 VMs){tail}\n"
            f"Date: {_date(t)}\nMessage-ID: {self._mid('backup.msp.example')}\n"
            f'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="{b}"\n\n'
            f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            f"Backup job: {site} - {job}\nStatus: {state}\nStart time: {_date(t)}\n"
            f"Processed VMs: 3\n\nVeeam Backup & Replication 12.2\n\n"
            f"--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            f"<html><body><table><tr><td><b>Backup job: {site} - {job}</b></td></tr>"
            f"<tr><td>{state}</td></tr></table></body></html>\n--{b}--\n").encode()

    def datto(self, t: float, account: str, device: str, monitor: str, alert_id: str,
              resolved: bool) -> bytes:
        cust = DATTO_CUSTOMER[account]
        b = "b1_datto"
        subject = ("Datto RMM Alert Resolved: " if resolved else "Datto RMM Alert: ") + \
            f"{monitor} on {device}"
        token = ("&lt;Autotask&gt;<br>\n&lt;ID name=&quot;msp.example&quot;/&gt;<br>\n"
                 f"&lt;CustomerID source=&quot;Datto RMM&quot; name=&quot;{cust}&quot;/&gt;<br>\n"
                 f"&lt;DeviceID source=&quot;Datto RMM&quot; name=&quot;{device}&quot;/&gt;<br>\n"
                 f"&lt;AlertID source=&quot;Datto RMM&quot; name=&quot;{alert_id}&quot;/&gt;<br>\n"
                 "&lt;/Autotask&gt;")
        return (
            _received("mail.rmm.example", t, f"DRMM{self.n}") +
            "From: Datto RMM <noreply@rmm.example>\nTo: alerts@msp.example\n"
            f"Subject: {subject}\nDate: {_date(t)}\nMessage-ID: {self._mid('rmm.example')}\n"
            f'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="{b}"\n\n'
            f"--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            f"Site: {account} - Head Office\nDevice: {device}\nMonitor: {monitor}\n"
            f"{'The alert condition has cleared.' if resolved else 'Current value: 93.4%'}\n\n"
            f"Datto RMM - https://rmm.example/alerts\n\n"
            f"--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
            f'<html><head><meta charset="utf-8"></head><body>\n<p>Site: {account}</p>\n'
            f"<p>Device: {device}</p>\n<p>Monitor: {monitor}</p>\n"
            f'<p style="color:#ffffff;font-size:1px">{token}</p>\n</body></html>\n\n'
            f"--{b}--\n").encode()

    def fortigate(self, t: float, account: str, fw: str, event: str, cleared: bool) -> bytes:
        domain = DOMAINS[account]
        return (
            _received(f"fw.{domain}", t, f"FGT{self.n}") +
            f"From: FortiGate {fw} <fortigate@fw.{domain}>\nTo: alerts@msp.example\n"
            f"Subject: Alert: {event} ({fw}){' cleared' if cleared else ''}\n"
            f"Date: {_date(t)}\nMessage-ID: {self._mid('fw.' + domain)}\nMIME-Version: 1.0\n"
            "X-Mailer: FortiGate FG100F v7.2.5,build1517\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            f"Message meets Alert condition\ndate=2025-03-04 devname=\"{fw}\" "
            f"type=\"utm\" level=\"alert\" srcip=203.0.113.{self.n % 250} "
            f"action=\"{'cleared' if cleared else 'dropped'}\"\n").encode()

    def nsight(self, t: float, account: str, host: str, passed: bool) -> bytes:
        word = "PASSED" if passed else "FAILED"
        html = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Patch report</title>'
                f'</head>\n<body style="font-family:Arial">\n<h2>{word} &ndash; Patch installation'
                f'</h2>\n<table border="1" cellpadding="4">\n<tr><th>Customer</th><td>{account}'
                f'</td></tr>\n<tr><th>Device</th><td>{host}</td></tr>\n<tr><th>Patch</th><td>'
                f'2025-02 Cumulative Update (KB50{self.n % 99999:05d})</td></tr>\n<tr><th>Result'
                f'</th><td>{"Installed" if passed else "Installation failed: 0x800f0922"}</td>'
                f'</tr>\n</table>\n<p>N-sight RMM &copy; 2025</p>\n</body></html>\n')
        body = base64.encodebytes(html.encode()).decode()
        return (
            _received("nsight.msp.example", t, f"NS{self.n}") +
            "From: N-sight RMM <alerts@nsight.msp.example>\nTo: alerts@msp.example\n"
            f"Subject: {word} - Patch installation on {host} ({account})\n"
            f"Date: {_date(t)}\nMessage-ID: {self._mid('nsight.msp.example')}\n"
            "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n"
            f"Content-Transfer-Encoding: base64\n\n{body}").encode()


def _incident(f: Factory, family: str, t0: float, ident: int) -> list[tuple[float, bytes, str]]:
    """One incident's messages: [(offset-adjusted time, raw, kind)]."""
    rng = f.rng
    account, group, site = rng.choice(ACCOUNTS)
    out: list[tuple[float, str]] = [(t0, "problem")]
    repeats = rng.choices([0, 1, 2, 3], weights=[45, 30, 15, 10])[0]
    t = t0
    for _ in range(repeats):
        # Half the repeats come within the 5-minute coalescing window, half later.
        t += rng.uniform(30, 290) if rng.random() < 0.5 else rng.uniform(310, 1800)
        out.append((t, "repeat"))
    if family == "nagios-service" and rng.random() < 0.15:
        t += rng.uniform(60, 600)
        out.append((t, "ack"))
    if rng.random() < 0.75:
        t += rng.uniform(120, 3600)
        out.append((t, "recovery"))
    msgs: list[tuple[float, bytes, str]] = []
    if family == "nagios-service":
        host, service = f"{group[:4].lower()}-srv{ident:05d}", rng.choice(SERVICES)
        for at, kind in out:
            state = {"recovery": "OK", "ack": "ACK"}.get(kind, "CRITICAL")
            msgs.append((at, f.nagios_service(at, group, host, service, state), kind))
    elif family == "nagios-host":
        host = f"{group[:4].lower()}-host{ident:05d}"
        for at, kind in out:
            msgs.append((at, f.nagios_host(at, group, host, "UP" if kind == "recovery"
                                           else "DOWN"), kind))
    elif family == "zabbix":
        host, problem = f"{group[:4].lower()}-zbx{ident:05d}", rng.choice(ZBX_PROBLEMS)
        for at, kind in out:
            msgs.append((at, f.zabbix(at, account, host, problem, 100000 + ident,
                                      kind == "recovery"), kind))
    elif family == "prtg":
        sensor, host = rng.choice(PRTG_SENSORS), f"sw-{ident:05d}"
        for at, kind in out:
            msgs.append((at, f.prtg(at, account, sensor, host,
                                    "Up" if kind == "recovery" else "Down"), kind))
    elif family == "veeam":
        job = f"Job {ident:05d}"
        for at, kind in out:
            msgs.append((at, f.veeam(at, site, job, "Success" if kind == "recovery"
                                     else "Failed"), kind))
    elif family == "veeam-warning":
        msgs.append((t0, f.veeam(t0, site, f"Job {ident:05d}", "Warning"), "skip"))
    elif family == "datto":
        device, monitor = f"DEV-{ident:05d}", rng.choice(DATTO_MONITORS)
        alert_id = f"{rng.getrandbits(64):016x}-{ident:05d}"
        for at, kind in out:
            msgs.append((at, f.datto(at, account, device, monitor, alert_id,
                                     kind == "recovery"), kind))
    elif family == "fortigate":
        fw, event = f"FG-{group[:6].upper()}-{ident:04d}", rng.choice(FG_EVENTS)
        for at, kind in out:
            msgs.append((at, f.fortigate(at, account, fw, event, kind == "recovery"), kind))
    elif family == "nsight":
        host = f"{group[:4].upper()}-LT-{ident:04d}"
        for at, kind in out:
            msgs.append((at, f.nsight(at, account, host, kind == "recovery"), kind))
    return msgs


def backlog(n: int, start: float, end: float, seed: int = 9) -> list[Mail]:
    """`n` messages of mixed incidents whose problems start within [start, end - 1 h] and
    whose follow-ups are capped at `end`; sorted by arrival."""
    f = Factory(seed)
    rng = f.rng
    names = [name for name, _ in FAMILIES]
    weights = [w for _, w in FAMILIES]
    mails: list[Mail] = []
    ident = 0
    while len(mails) < n:
        ident += 1
        family = rng.choices(names, weights=weights)[0]
        t0 = rng.uniform(start, max(start, end - 3600))
        for at, raw, kind in _incident(f, family, t0, ident):
            mails.append(Mail(raw, min(at, end), family, f"{family}:{ident}", kind))
    # Drop whole messages from the end of the list, not from the middle of incidents' lives:
    # the youngest incidents lose their last follow-ups, as a backlog cut at any moment does.
    mails.sort(key=lambda m: m.at)
    return mails[:n]


def storm_accounts_csv(sites: int) -> str:
    rows = ["id,name,aliases,foreign_ids,senders"]
    for i in range(sites):
        rows.append(f"SITE-{i:03d},Storm Site {i:03d},,site{i:03d},@site{i:03d}.example")
    return "\n".join(rows) + "\n"


def storm(n: int, sites: int, start: float, seconds: float = 60.0, seed: int = 5) -> list[Mail]:
    """`n` distinct new problems (Nagios service alerts, host group = the site's foreign id)
    for `sites` sites, arrivals spread evenly over `seconds` from `start`."""
    f = Factory(seed)
    mails = []
    for i in range(n):
        at = start + seconds * i / n
        site = i % sites
        raw = f.nagios_service(at, f"site{site:03d}", f"s{site:03d}-host{i:05d}",
                               f.rng.choice(SERVICES), "CRITICAL")
        mails.append(Mail(raw, at, "storm", f"storm:{i}", "problem"))
    return mails


def latency_alert(i: int, t: float, tag: str = "lat") -> tuple[bytes, str]:
    """A message that opens a new ticket; returns (raw, the ticket title the PSA will get)."""
    f = Factory(1000 + i)
    host = f"{tag}-{i:05d}"
    raw = f.nagios_service(t, "acme", host, "HTTP", "CRITICAL")
    return raw, f"HTTP on {host} is CRITICAL"


def big_attachment(size: int, t: float) -> bytes:
    """A Nagios problem with a base64 attachment; the whole message is about `size` bytes."""
    f = Factory(77)
    head = f.nagios_service(t, "acme", "big-host", "Disk D", "CRITICAL")
    headers, _, body = head.partition(b"\n\n")
    headers = headers.replace(b"Content-Type: text/plain; charset=us-ascii\n"
                              b"Content-Transfer-Encoding: 7bit\n", b"")
    headers += b'\nContent-Type: multipart/mixed; boundary="bigpart"'
    line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n"
    lines = max(1, (size - len(headers) - len(body) - 300) // len(line))
    return (headers + b"\n\n--bigpart\nContent-Type: text/plain; charset=us-ascii\n\n" + body
            + b"\n--bigpart\nContent-Type: application/octet-stream; name=\"dump.bin\"\n"
            b"Content-Disposition: attachment; filename=\"dump.bin\"\n"
            b"Content-Transfer-Encoding: base64\n\n" + line * lines + b"--bigpart--\n")
