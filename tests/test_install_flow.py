"""systemd/README.md followed as far as a container allows (issue 17), as CI runs it (root):
`mailbridge init` into a fresh directory tree, `check` as the service user (dropped with
setpriv), `check --online` as root against Dovecot, aiosmtpd and the simulator, and `run --once`
as the service user with the credentials handed over as systemd would ($CREDENTIALS_DIRECTORY).
No edit beyond the flags `init` documents."""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.dovecot import PASSWORD, USER, DovecotServer
from tests.fixtures.psa import SimulatorServer
from tests.fixtures.smtp import SmtpSink
from tests.helpers import MAILBRIDGE, ROOT, SAMPLES

SERVICE_USER = "nobody"  # an unprivileged user every Debian has; the test acts as it
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs as root, like the README")


@pytest.fixture
def tree() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are root-only, so the service user could not reach it.
    base = Path(tempfile.mkdtemp(prefix="mailbridge-install-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as(user: str) -> list[str]:
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--"]


def service_command(user: str) -> tuple[list[str], str]:
    """How the service user runs mailbridge: the test's own command when that user may execute
    its interpreter; else (a virtualenv whose interpreter lives under root's home, as on the
    shared development machine) the system's python3 of the same minor version, with the same
    packages on its path. The worker pool re-executes sys.executable, so it must be runnable."""
    # (A child of the child: setpriv itself may still reach the interpreter where the
    # service user's own processes cannot.)
    probe = subprocess.run([*_as(user), "/bin/sh", "-c", f"exec {sys.executable} -c pass"],
                           capture_output=True)
    if probe.returncode == 0:
        return [MAILBRIDGE], str(ROOT)
    system = shutil.which(f"python3.{sys.version_info.minor}", path="/usr/bin")
    if system is None:
        pytest.fail("no interpreter the service user may execute (install python3.X in /usr/bin)")
    return [system, "-m", "bridge.cli"], os.pathsep.join([str(ROOT), *site.getsitepackages()])


def sh(*args: str, user: str | None = None, env: dict[str, str] | None = None,
       stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`mailbridge ARGS` as root, or as `user` (setpriv: uid, gid and supplementary groups)."""
    command, path = ([MAILBRIDGE], str(ROOT)) if user is None else service_command(user)
    prefix = [] if user is None else _as(user)
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": path, "LANG": "C.UTF-8",
                   "HOME": "/nonexistent" if user else os.environ.get("HOME", "/root"),
                   **(env or {})}
    done = subprocess.run([*prefix, *command, *args], capture_output=True, text=True,
                          env=environment,
                          input=stdin.decode() if stdin else None, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_readme_install_passes_first_time(tree: Path, dovecot: DovecotServer,
                                              smtp_sink: SmtpSink,
                                              psa_sim: SimulatorServer) -> None:
    etc, store = tree / "etc" / "mailbridge", tree / "var" / "lib" / "mailbridge" / "mb.db"
    secret_file = tree / "oem-token"
    secret_file.write_text("demo-org-token\n")
    init = sh("init", str(etc), "--store", str(store),
              "--systemd-dir", str(tree / "etc" / "systemd" / "system"),
              "--user", SERVICE_USER,
              "--imap-host", dovecot.host, "--imap-port", str(dovecot.port),
              "--imap-security", "none", "--imap-user", USER,
              "--smtp-host", smtp_sink.host, "--smtp-port", str(smtp_sink.port),
              "--smtp-security", "none", "--smtp-user", "",
              "--psa-url", psa_sim.url, "--psa-client-id", "demo-client",
              "--psa-integration-id", "demo-integration",
              "--admin-address", "noc@msp.example", "--internal-address", "support@msp.example",
              "--secret", "imap-password=-", "--secret", "psa-client-secret=demo-secret",
              "--secret", f"psa-oem-token=@{secret_file}", stdin=f"{PASSWORD}\n".encode())
    assert init.returncode == 0, init.stderr
    credentials = etc / "credentials"
    assert oct(credentials.stat().st_mode & 0o777) == "0o700"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in credentials.iterdir()} == {
        "imap-password": "0o600", "psa-client-secret": "0o600", "psa-oem-token": "0o600"}
    dropin = (tree / "etc/systemd/system/mailbridge.service.d/10-init.conf").read_text()
    assert f"LoadCredential=imap-password:{credentials}/imap-password" in dropin
    assert f"run --config {etc}/config.toml" in dropin
    assert "# Accounts" in (etc / "rules" / "accounts.csv").read_text().split("\n")[0] or \
        (etc / "rules" / "accounts.csv").read_text().startswith("# The accounts directory")

    config = str(etc / "config.toml")
    # Step 3's check, as the service user: the secrets are root's, so they are warnings.
    offline = sh("check", "--config", config, user=SERVICE_USER)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "loaded by systemd when the service starts" in offline.stdout
    # As root, every peer.
    online = sh("check", "--online", "--config", config)
    assert online.returncode == 0, online.stdout + online.stderr
    assert online.stdout.count("online:") == 3 and ": NO" not in online.stdout

    # The service: systemd copies each LoadCredential= file into a directory only the
    # service user can read and names it in $CREDENTIALS_DIRECTORY.
    run_dir = tree / "run" / "credentials" / "mailbridge.service"
    run_dir.mkdir(parents=True)
    for line in dropin.splitlines():
        if line.startswith("LoadCredential="):
            name, source = line.removeprefix("LoadCredential=").split(":", 1)
            shutil.copy(source, run_dir / name)
    entry = pwd.getpwnam(SERVICE_USER)
    for path in (run_dir, *run_dir.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    dovecot.append((SAMPLES / "05-zabbix-problem.eml").read_bytes())
    once = sh("run", "--once", "--config", config, user=SERVICE_USER,
              env={"CREDENTIALS_DIRECTORY": str(run_dir)})
    assert once.returncode == 0, once.stdout + once.stderr
    assert "created 1" in once.stdout
    assert len(psa_sim.tickets()) == 1
