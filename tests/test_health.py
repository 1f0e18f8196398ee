"""A health picture that means something (issue 17): `degraded` only when mailbridge itself
needs a person. Dead rows are cleared by `outbox drop` and `outbox ack`; a 404 for one
account's create is that message's outcome (and a digest line), 404s across several accounts
degrade; `PSA auth` shows the last call's result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from bridge.config import settings_from_dict
from bridge.models import OutboxItem
from bridge.operator.digest import digest_due, last_slot
from bridge.operator.status import REFUSED_ACCOUNTS, RuntimeStatus
from bridge.operator.web import create_app
from bridge.store import AsyncStore, Store
from tests.helpers import cli, write_config


def status(config: Path) -> dict:
    done = cli("status", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.fixture
def config(tmp_path, psa_sim, smtp_sink):
    return write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)


def dead_row(store: Store) -> int:
    row = store.enqueue(OutboxItem("psa", "k1", {"title": "t"}, "OPEN"), None)
    store.outbox_dead(row, "HTTP 500 three times")
    return row


async def healthz(path: Path) -> httpx.Response:
    rt = RuntimeStatus(ruleset_version="r")
    app = create_app(AsyncStore(Store(path, migrate=False)), rt,
                     settings_from_dict({"http": {}}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:8025") as c:
        r = await c.get("/healthz")
    app.state.close()
    return r


@pytest.mark.parametrize("answer", ["drop", "ack"])
async def test_drop_and_ack_clear_degraded_in_status_and_healthz(config, answer):
    db = config.parent / "mailbridge.db"
    store = Store(db)
    row = dead_row(store)
    store.close()
    assert not status(config)["healthy"]
    assert (await healthz(db)).status_code == 503
    done = cli("outbox", "--config", str(config), answer, str(row))
    assert done.returncode == 0
    assert (b"dropped" if answer == "drop" else b"acknowledged") in done.stdout
    st = status(config)
    assert st["healthy"], st["reasons"]
    assert (await healthz(db)).json() == {"status": "ready"}
    listed = cli("outbox", "--config", str(config)).stdout.decode()
    if answer == "drop":
        assert st["outbox"]["dropped"] == 1 and f"\n{row} " not in listed
    else:
        assert st["outbox"]["acknowledged"] == 1 and "dead (acked)" in listed
        # A retry takes the acknowledgement back: if it dies again, it needs a person again.
        assert cli("outbox", "--config", str(config), "retry", str(row)).returncode == 0


def test_one_unmapped_account_is_an_outcome_several_degrade(config):
    one = cli("test-alert", "--config", str(config), "--account", "NOPE-9")
    assert one.returncode == 1 and b"failed" in one.stdout and b"404" in one.stdout
    st = status(config)
    assert st["healthy"], st["reasons"]                 # an expected answer: not trouble
    assert st["outbox"]["dead"] == 0
    assert st["psa_auth"] == "ok"                       # the PSA answered: credentials fine
    for n in range(1, REFUSED_ACCOUNTS):
        cli("test-alert", "--config", str(config), "--account", f"NOPE-{n}")
    st = status(config)
    assert not st["healthy"]
    [reason] = st["reasons"]
    assert f"refused creates (404) for {REFUSED_ACCOUNTS} accounts" in reason


def test_psa_auth_shows_the_last_calls_result(config):
    Store(config.parent / "mailbridge.db").close()
    assert "PSA auth:     unknown" in cli("status", "--config", str(config)).stdout.decode()
    assert cli("test-alert", "--config", str(config), "--account", "ACME-001").returncode == 0
    text = cli("status", "--config", str(config)).stdout.decode()
    assert "PSA auth:     ok (last call" in text


def test_the_daily_digest_lists_refused_creates_once_a_day(tmp_path):
    settings = settings_from_dict({"smtp": {"host": "127.0.0.1", "security": "none"},
                                   "routing": {"admin_address": "noc@msp.example",
                                               "digest_time": "08:00"}})
    store = Store(tmp_path / "db")
    slot = last_slot("08:00", time.time())
    store.clock = lambda: slot - 3600
    store.event("create-refused", 7, "k", "failed", account_id="NOPE-9", product_group="test",
                alert_type="Test Alert", message="account not mapped")
    mail = digest_due(settings, store, now=slot + 60)
    assert mail is not None and mail.payload["to"] == "noc@msp.example"
    assert "NOPE-9" in mail.payload["text"] and "account not mapped" in mail.payload["text"]
    assert digest_due(settings, store, now=slot + 120) is None          # once per day
    assert digest_due(settings, store, now=slot + 86400 + 60) is None   # nothing new: no mail
    no_smtp = settings.model_copy(update={"smtp": None})
    assert digest_due(no_smtp, store, now=slot + 2 * 86400 + 60) is None
    assert len(store.outbox_rows(("pending",))) == 1
