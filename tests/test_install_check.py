"""`mailbridge check` as a new administrator meets it (issue 17): secrets that only the service
can read, one pass over config, accounts and rules, and the real cause of an SMTP refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.config import ConfigError, SmtpSettings, load_settings
from bridge.deliver.smtp import SmtpSender, compose_admin_alert
from tests.fixtures.smtp import SmtpSink
from tests.helpers import ROOT, cli


def test_the_example_config_checks_in_the_repository() -> None:
    result = cli("check", "--config", str(ROOT / "config.example.toml"))
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "check: OK" in out
    # The secrets are not there outside the service: warned about, not errors.
    assert "imap-password" in out and "loaded by systemd when the service starts" in out


def test_a_credential_is_read_from_systemds_directory_else_beside_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[psa]\nclient_secret = { credential = "psa-client-secret" }\n')
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "psa-client-secret").write_text("beside\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_settings(config).psa.client_secret.get_secret_value() == "beside"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "psa-client-secret").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(run_dir))
    assert load_settings(config).psa.client_secret.get_secret_value() == "from-systemd"
    (run_dir / "psa-client-secret").unlink()
    with pytest.raises(ConfigError, match="LoadCredential= did not hand it over"):
        load_settings(config)


def test_online_check_makes_a_missing_secret_an_error_that_says_what_to_do(
        tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[psa]\nenabled = false\nclient_secret = { credential = "psa" }\n'
                      '[http]\nenabled = false\n[rules]\ndirectory = "rules"\n')
    (tmp_path / "rules").mkdir()
    offline = cli("check", "--config", str(config))
    assert offline.returncode == 0 and b"warning:" in offline.stdout
    online = cli("check", "--config", str(config), "--online")
    err = online.stderr.decode()
    assert online.returncode == 1
    assert f"{tmp_path}/credentials/psa" in err and "root-only 0600" in err
    assert "Value error" not in err


def test_a_file_under_run_credentials_says_why_it_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[psa]\nclient_secret = { file = "/run/credentials/mailbridge.service/x" }\n')
    with pytest.raises(ConfigError, match="exists only while mailbridge.service runs"):
        load_settings(config)


def test_check_reports_config_accounts_and_rules_in_one_pass(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("*.csv"))
    (rules / "80-typo.toml").write_text('[[detect]]\nname = "typo"\nbogus = 1\n')
    config = tmp_path / "config.toml"
    config.write_text('[psa]\nconcurrency = 0\n[rules]\ndirectory = "rules"\n'
                      'accounts = "accounts.toml"\n'
                      + (ROOT / "tests" / "helpers.py").read_text().split('CATALOGUE = """')[1]
                      .split('"""')[0])
    result = cli("check", "--config", str(config))
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1
    assert "psa.concurrency" in err                          # the config error ...
    assert "80-typo.toml" in out                             # ... does not hide the rules
    missing = [line for line in out.splitlines() if "accounts.toml" in line]
    assert len(missing) == 1 and "mailbridge init" in missing[0]   # one root cause, once
    assert "can never match" not in out


def test_a_csv_accounts_file_may_open_with_a_comment(tmp_path: Path) -> None:
    from bridge.classify.accounts import load_accounts

    path = tmp_path / "accounts.csv"
    path.write_text("# customers: one per line\n# id,name\nid,name\n# a note\nA-1,Acme\n,\nB-2,\n")
    directory, problems = load_accounts(path)
    assert directory.index["record-id"].keys() == {"a-1"}
    assert [p.line for p in problems] == [7], problems  # B-2 without a name, at its own line


async def test_an_smtp_relay_without_auth_is_named_as_the_cause(smtp_sink: SmtpSink) -> None:
    settings = SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, security="none",
                            username="alerts@msp.example", password="example-password",
                            timeout=5, from_address="alerts@msp.example")
    mail = compose_admin_alert("a@msp.example", "x", "y", "alerts@msp.example")
    result = await SmtpSender(settings).send(mail)
    assert result.verdict == "permanent" and result.config_error
    assert "offers no AUTH" in result.detail and "STARTTLS" not in result.detail
    assert 'smtp.security = "none"' in result.detail


def test_init_never_overwrites_and_keeps_credential_files_tmpfiles_made(tmp_path: Path) -> None:
    from bridge.operator.install import InitError, InitOptions, init

    etc = tmp_path / "etc"
    (etc / "credentials").mkdir(parents=True)
    (etc / "credentials" / "imap-password").write_text("")  # systemd-tmpfiles' empty file
    options = InitOptions(directory=etc, store=tmp_path / "var" / "mb.db", user=None,
                          systemd_dir=None, secrets={"psa-oem-token": "token"},
                          values={("psa", "base_url"): "http://127.0.0.1:9",
                                  ("imap", "port"): 1143})
    written = init(options)
    assert etc / "credentials" / "imap-password" not in written
    assert (etc / "credentials" / "psa-oem-token").read_text() == "token"
    text = (etc / "config.toml").read_text()
    assert 'base_url = "http://127.0.0.1:9"' in text and "port = 1143" in text
    assert text.count("# ") > 50  # still the commented example
    before = (etc / "config.toml").read_text()
    with pytest.raises(InitError, match="not overwritten"):
        init(options)
    assert (etc / "config.toml").read_text() == before
    result = cli("check", "--config", str(etc / "config.toml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_simulate_works_with_the_example_config_before_any_secret_exists() -> None:
    result = cli("simulate", "--config", str(ROOT / "config.example.toml"), "--json",
                 str(ROOT / "samples" / "05-zabbix-problem.eml"))
    assert result.returncode == 0, result.stderr.decode()
    assert b'"outcome": "created"' in result.stdout


def test_init_enables_the_packs_it_is_given_and_check_names_what_to_map(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    result = cli("init", str(etc), "--no-systemd", "--user", "root", "--store",
                 str(tmp_path / "mb.db"), "--pack", "nagios")
    assert result.returncode == 0, result.stderr.decode()
    config = etc / "config.toml"
    assert load_settings(config, lenient_secrets=True).rules.packs == ["nagios"]
    # The pack speaks the neutral vocabulary; check says what to map onto this catalogue.
    checked = cli("check", "--config", str(config))
    out = checked.stdout.decode()
    assert checked.returncode == 1 and "map it with [packs.nagios] alert_types" in out, out
    assert out.count("'Service Critical'") == 1, out  # one root cause, one error
    config.write_text(config.read_text() + '\n[packs.nagios]\nalert_types = { '
                      '"Service Critical" = "Problem", "Service Warning" = "Problem", '
                      '"Host Down" = "Problem" }\n')
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout.decode()
    refused = cli("init", str(tmp_path / "other"), "--no-systemd", "--pack", "nagioss")
    assert refused.returncode == 1 and b"no rule pack named nagioss" in refused.stderr
