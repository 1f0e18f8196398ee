"""End to end through the real CLI: `mailbridge ingest` -> store -> rules -> PSA simulator."""

from __future__ import annotations

import pytest

from tests.helpers import SAMPLES, cli, outcomes, write_config


@pytest.fixture
def config(tmp_path, psa_sim, smtp_sink):
    # A recovery closes its ticket at once: no flap damping (default 120 s since issue 15).
    return write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                        extra="\n[storm]\nresolve_delay = 0.0\n")


def ingest(config, name_or_bytes):
    raw = name_or_bytes if isinstance(name_or_bytes, bytes) else \
        (SAMPLES / name_or_bytes).read_bytes()
    return cli("ingest", "--config", str(config), stdin=raw)


def test_nagios_problem_repeat_recovery_is_one_ticket_with_its_history(config, psa_sim):
    for name in ("01-nagios-problem.eml", "02-nagios-problem-again.eml",
                 "04-nagios-recovery.eml"):
        result = ingest(config, name)
        assert result.returncode == 0, result.stderr.decode()
    [ticket] = psa_sim.tickets()
    assert ticket["accountId"] == "ACME-001" and ticket["status"] == "closed"
    assert [h["incidentStatus"] for h in ticket["history"]] == ["OPEN", "UPDATE", "RESOLVED"]
    got = [o for o, _ in outcomes(config.parent / "mailbridge.db").values()]
    assert got == ["created", "appended", "resolved"]


def test_the_same_email_piped_twice_makes_one_ticket(config, psa_sim):
    assert ingest(config, "05-zabbix-problem.eml").returncode == 0
    again = ingest(config, "05-zabbix-problem.eml")
    assert again.returncode == 0 and b"already staged" in again.stderr
    assert len(psa_sim.tickets()) == 1
    assert len(psa_sim.calls()) == 1
    assert len(outcomes(config.parent / "mailbridge.db")) == 1


def test_forged_recovery_is_rejected_and_does_not_close(config, psa_sim):
    ingest(config, "01-nagios-problem.eml")
    ingest(config, "03-nagios-forged-recovery.eml")
    [ticket] = psa_sim.tickets()
    assert ticket["status"] != "closed"
    outcome, reason = outcomes(config.parent / "mailbridge.db")[2]
    assert outcome == "rejected" and "not authenticated" in reason


def test_unmatched_and_skipped_are_forwarded(config, psa_sim, smtp_sink):
    ingest(config, "19-nagios-unknown-account.eml")
    ingest(config, "14-xyz-self-healed-skipped.eml")
    got = outcomes(config.parent / "mailbridge.db")
    assert [o for o, _ in got.values()] == ["unmatched", "skipped"]
    smtp_sink.wait_for(2)
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == ["support@msp.example"] * 2
    assert psa_sim.tickets() == []


@pytest.mark.parametrize("raw", [
    b"\x00\x01\x02 not a message at all \xff\xfe",
    b"Subject: =?utf-8?B?broken\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"From: <>\r\n\r\n",
])
def test_malformed_email_gets_a_recorded_outcome_not_a_traceback(config, raw):
    result = ingest(config, raw)
    assert result.returncode == 0
    assert b"Traceback" not in result.stderr
    [(outcome, reason)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome in ("quarantined", "regular", "rejected") and reason


def test_ingest_cannot_stage_exits_75(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    (tmp_path / "mailbridge.db").mkdir()  # the store path is unusable
    result = cli("ingest", "--config", str(config),
                 stdin=(SAMPLES / "01-nagios-problem.eml").read_bytes())
    assert result.returncode == 75
    assert b"could not stage" in result.stderr


def test_ingest_with_psa_down_keeps_the_message_pending(config, psa_sim):
    psa_sim.control(fail_next=1000, fail_status=503)
    assert ingest(config, "05-zabbix-problem.eml").returncode == 0
    [(outcome, _)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome is None  # pending, kept for the daemon or the next run
    listed = cli("outbox", "--config", str(config), "--json")
    [row] = __import__("json").loads(listed.stdout)
    # The row waits for its backoff (kept for the daemon or the next run), with the reason.
    assert row["state"] == "pending" and row["action"] == "OPEN" and row["attempts"] >= 1
    assert "503" in (row["last_error"] or "")
    psa_sim.control(reset_faults=True)
    assert cli("outbox", "--config", str(config), "retry", str(row["id"])).returncode == 0
    done = cli("run", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr.decode()
    assert [o for o, _ in outcomes(config.parent / "mailbridge.db").values()] == ["created"]
