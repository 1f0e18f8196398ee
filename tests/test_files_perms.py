"""Store files and backups are private, and `check` says when they or the web are not (issue 14).

Every command runs as a real `mailbridge` process with a umask of 022, the usual default that
made every raw mail world-readable before.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.helpers import MAILBRIDGE, SAMPLES, write_config


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MAILBRIDGE, *args], input=stdin, capture_output=True, timeout=60,
                          preexec_fn=lambda: os.umask(0o022))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def store_files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def test_every_store_file_a_command_creates_is_0600(tmp_path, psa_sim) -> None:
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    done = run("ingest", "--config", str(config),
               stdin=(SAMPLES / "05-zabbix-problem.eml").read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    assert db.exists()
    for path in store_files(db):
        assert mode(path) == 0o600, path
    # `migrate` (what a first start runs) creates a store private too; a view never
    # creates one (docs/architecture.md, "Migrations and readers").
    other = tmp_path / "other"
    other.mkdir()
    text = config.read_text().replace(str(db), str(other / "fresh.db"))
    (other / "config.toml").write_text(text)
    assert run("status", "--config", str(other / "config.toml")).returncode in (0, 1, 2, 3)
    assert not (other / "fresh.db").exists()
    assert run("migrate", "--config", str(other / "config.toml")).returncode == 0
    for path in store_files(other / "fresh.db"):
        assert mode(path) == 0o600, path


def test_backup_is_private_refuses_to_overwrite_and_never_follows_a_link(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    assert run("ingest", "--config", str(config),
               stdin=(SAMPLES / "05-zabbix-problem.eml").read_bytes()).returncode == 0
    target = tmp_path / "copy.db"
    done = run("backup", "--config", str(config), str(target))
    assert done.returncode == 0, done.stderr.decode()
    assert mode(target) == 0o600
    import sqlite3
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1

    # An existing target is not overwritten without --force, and the error is one clear line.
    target.write_bytes(b"precious")
    done = run("backup", "--config", str(config), str(target))
    assert done.returncode == 1
    assert b"exists; use --force" in done.stderr and b"Traceback" not in done.stderr
    assert target.read_bytes() == b"precious"
    assert run("backup", "--force", "--config", str(config), str(target)).returncode == 0
    assert mode(target) == 0o600 and target.read_bytes().startswith(b"SQLite format 3")

    # A symbolic link at the target: refused; with --force the link itself is replaced and
    # the file it points to is never written.
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    os.chmod(victim, 0o644)
    link = tmp_path / "link.db"
    link.symlink_to(victim)
    done = run("backup", "--config", str(config), str(link))
    assert done.returncode == 1 and b"exists" in done.stderr
    assert run("backup", "--force", "--config", str(config), str(link)).returncode == 0
    assert victim.read_text() == "do not touch" and mode(victim) == 0o644
    assert not link.is_symlink() and mode(link) == 0o600

    # A bad target is an error message, not a traceback; no temporary file is left behind.
    done = run("backup", "--config", str(config), str(tmp_path / "missing" / "x.db"))
    assert done.returncode == 1 and done.stderr.startswith(b"backup: ")
    assert b"Traceback" not in done.stderr
    done = run("backup", "--config", str(config), str(tmp_path))
    assert done.returncode != 0 and b"Traceback" not in done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_check_warns_about_a_readable_store_and_a_public_bind(tmp_path, psa_sim) -> None:
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    assert run("migrate", "--config", str(config)).returncode == 0
    quiet = run("check", "--config", str(config))
    assert b"can be read by other users" not in quiet.stdout + quiet.stderr
    os.chmod(db, 0o644)
    text = config.read_text().replace("[http]\nenabled = false",
                                      '[http]\nhost = "0.0.0.0"\nallowed_hosts = ["bridge.example"]')
    config.write_text(text)
    done = run("check", "--config", str(config))
    out = (done.stdout + done.stderr).decode()
    assert "warning: store.path:" in out and "can be read by other users" in out
    assert "warning: http.host: 0.0.0.0 is not a loopback address" in out
    assert "bridge.example" in out
    assert done.returncode == quiet.returncode  # warnings do not fail the check
