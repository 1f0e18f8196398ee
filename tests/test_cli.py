"""The command line against real parts: the simulator over HTTP, a real store, the shipped rules."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import ROOT, SAMPLES, cli, outcomes, write_config


@pytest.fixture
def config(tmp_path, psa_sim, smtp_sink):
    return write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)


def run(*args, **kw):
    result = cli(*args, **kw)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


def ingest(config, name):
    assert run("ingest", "--config", str(config),
               stdin=(SAMPLES / name).read_bytes()).returncode == 0


def test_test_alert_creates_and_resolves(config, psa_sim):
    made = run("test-alert", "--config", str(config), "--account", "ACME-001")
    assert made.returncode == 0, made.stderr.decode()
    assert b"created" in made.stdout
    closed = run("test-alert", "--config", str(config), "--account", "ACME-001", "--resolve")
    assert closed.returncode == 0 and b"resolved" in closed.stdout
    [ticket] = psa_sim.tickets()
    assert ticket["productGroup"] == "test" and ticket["status"] == "closed"


def test_test_alert_for_an_unmapped_account_reports_the_failure(config):
    result = run("test-alert", "--config", str(config), "--account", "UMBRELLA-004")
    assert result.returncode == 1 and b"failed" in result.stdout and b"mapped" in result.stdout


def test_test_alert_refuses_a_group_outside_the_catalogue(config):
    result = run("test-alert", "--config", str(config), "--account", "ACME-001",
                 "--product-group", "nope")
    assert result.returncode == 1 and b"catalogue" in result.stderr


def test_reconcile_finds_and_fixes_a_ticket_closed_by_a_technician(config, psa_sim):
    ingest(config, "05-zabbix-problem.eml")
    [ticket] = psa_sim.tickets()
    assert run("reconcile", "--config", str(config)).returncode == 0
    psa_sim.control(close_ticket=ticket["correlationId"])
    found = run("reconcile", "--config", str(config), "--json")
    assert found.returncode == 1
    assert json.loads(found.stdout)["closed_at_psa"][0]["correlation_id"] == \
        ticket["correlationId"]
    assert run("reconcile", "--config", str(config), "--fix").returncode == 0
    ingest(config, "05-zabbix-problem.eml".replace("05", "05"))  # same bytes: de-duplicated
    assert len(psa_sim.tickets()) == 1
    raw = (SAMPLES / "05-zabbix-problem.eml").read_bytes().replace(b"Message-ID: <",
                                                                   b"Message-ID: <again.")
    assert run("ingest", "--config", str(config), stdin=raw).returncode == 0
    tickets = psa_sim.tickets()
    assert len(tickets) == 2 and {t["status"] for t in tickets} == {"open", "closed"}


def test_check_accepts_the_shipped_rules_and_names_file_and_line_of_errors(tmp_path, config):
    ok = run("check", "--config", str(config))
    assert ok.returncode == 0, ok.stdout.decode()
    assert b"check: OK" in ok.stdout
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "10-nagios.toml").write_text(
        (rules / "10-nagios.toml").read_text() + '\n[[detect]]\nname = "broken"\nsubjekt = "x"\n')
    text = config.read_text().replace(str(ROOT / "rules") + '"', str(rules) + '"')
    broken = tmp_path / "broken.toml"
    broken.write_text(text)
    bad = run("check", "--config", str(broken))
    assert bad.returncode == 1
    out = bad.stdout.decode()
    assert "10-nagios.toml:" in out and "subjekt" in out


def test_check_reports_config_errors_by_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[psa]\nconcurrency = 0\nbogus = 1\n')
    result = run("check", "--config", str(path))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "psa.concurrency" in err and "psa.bogus: unknown key" in err


def test_check_online_reaches_the_psa_and_smtp(config):
    result = run("check", "--config", str(config), "--online")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "online: PSA" in out and "yes" in out and "online: SMTP" in out


def test_simulate_shows_steps_rule_key_and_payload_and_sends_nothing(config, psa_sim):
    result = run("simulate", "--config", str(config), "--json",
                 str(SAMPLES / "01-nagios-problem.eml"), str(SAMPLES / "20-regular-human.eml"))
    assert result.returncode == 0, result.stderr.decode()
    first, second = json.loads(result.stdout)
    assert first["rule"].startswith("10-nagios.toml:") and first["account"] == "ACME-001"
    assert first["outcome"] == "created" and first["steps"]  # the words `run` records
    [payload] = first["payloads"]
    assert payload["incidentStatus"] == "OPEN" and payload["data"]["accountId"] == "ACME-001"
    assert second["outcome"] == "regular"
    assert psa_sim.calls() == []
    table = run("simulate", "--config", str(config), str(SAMPLES / "01-nagios-problem.eml"))
    assert b"10-nagios.toml" in table.stdout and b"created" in table.stdout


def test_views_status_events_tickets_outbox_backup(tmp_path, config, psa_sim):
    ingest(config, "05-zabbix-problem.eml")
    ingest(config, "20-regular-human.eml")
    status = json.loads(run("status", "--config", str(config), "--json").stdout)
    assert status["outbox"] is not None
    text = run("status", "--config", str(config)).stdout.decode()
    assert "outbox" in text.lower()
    events = json.loads(run("events", "--config", str(config), "--json",
                            "--message", "1").stdout)
    kinds = [e["kind"] for e in events]
    assert {"staged", "classified", "decided", "sent"} <= set(kinds)
    tickets = json.loads(run("tickets", "--config", str(config), "--json").stdout)
    assert len(tickets) == 1 and tickets[0]["alert_key"]
    remote = json.loads(run("tickets", "--config", str(config), "--remote", "--json").stdout)
    assert len(remote) == 1
    assert json.loads(run("outbox", "--config", str(config), "--json").stdout) == []
    copy = tmp_path / "copy.db"
    assert run("backup", "--config", str(config), str(copy)).returncode == 0
    assert outcomes(copy) == outcomes(config.parent / "mailbridge.db")


def test_replay_runs_a_failed_message_again_after_the_cause_is_fixed(config, psa_sim):
    ingest(config, "18-veeam-umbrella-unmapped.eml")
    [(outcome, reason)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "failed" and "mapped" in reason
    refused = run("replay", "--config", str(config), "999")
    assert refused.returncode == 1
    psa_sim.control(account={"id": "UMBRELLA-004", "mapped": True})
    again = run("replay", "--config", str(config), "1")
    assert again.returncode == 0, again.stdout.decode()
    assert b"created" in again.stdout
    [(outcome, _)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "created" and len(psa_sim.tickets()) == 1
