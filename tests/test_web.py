"""/healthz, /metrics, the dashboard and the vendor API, over ASGI and over real HTTP."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest

from bridge.config import settings_from_dict
from bridge.models import RawMessage
from bridge.operator.status import RuntimeStatus
from bridge.operator.web import create_app, serve
from bridge.store import AsyncStore, Store
from tests.test_views import SECRET, fill, leaks, raw_mail

VENDOR_KEY = "vendor-key-0123456789"
BASE = "http://127.0.0.1:8025"


def make_settings(**http):
    return settings_from_dict({
        "psa": {"client_secret": SECRET},
        "http": {"vendor_api_key": VENDOR_KEY, **http},
        "catalogue": [{"name": "backup", "alert_types": ["Backup Failed", "Backup Warning"]},
                      {"name": "servers", "alert_types": ["Host Down"]}],
    })


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
def filled(tmp_path):
    f = fill(tmp_path / "db")
    yield f
    f.store.close()


def runtime_ok() -> RuntimeStatus:
    rt = RuntimeStatus(ruleset_version="rules-7")
    rt.source_connected("imap:inbox", idle=True)
    rt.psa_auth_ok()
    return rt


async def test_healthz_ready_then_degraded(tmp_path):
    path = tmp_path / "db"
    Store(path).close()
    rt = runtime_ok()
    app = create_app(lambda: Store(path), rt, make_settings())
    async with client(app) as c:
        r = await c.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ready"})
        rt.psa_auth_refused(f"HTTP 401: bad clientSecret {SECRET}")
        rt.source_lost("imap:inbox", "LOGIN failed")
        r = await c.get("/healthz")
    app.state.close()
    assert r.status_code == 503 and r.json()["status"] == "degraded"
    reasons = r.json()["reasons"]
    assert any("PSA refused the credentials" in x for x in reasons)
    assert any("source imap:inbox not connected" in x and "LOGIN failed" in x for x in reasons)
    assert leaks(r.text) == []


async def test_healthz_reports_dead_rows_from_the_store(filled):
    app = create_app(AsyncStore(filled.store), runtime_ok(), make_settings())
    async with client(app) as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    assert r.json()["reasons"] == ["1 dead outbox row(s) need attention (mailbridge outbox)"]


async def test_metrics_series_read_from_the_store(filled):
    rt = runtime_ok()
    rt.source_lost("imap:other", f"connection refused {SECRET}")
    app = create_app(AsyncStore(filled.store), rt, make_settings())
    async with client(app) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    body = r.text
    for line in ('mailbridge_messages{outcome="created"} 1.0',
                 'mailbridge_messages{outcome="failed"} 1.0',
                 'mailbridge_messages{outcome="resolved"} 0.0',
                 'mailbridge_messages_waiting{state="staged"} 1.0',
                 'mailbridge_outbox{state="dead"} 1.0', 'mailbridge_outbox{state="pending"} 2.0',
                 'mailbridge_open_tickets 3.0',
                 'mailbridge_source_connected{source="imap:inbox"} 1.0',
                 'mailbridge_source_connected{source="imap:other"} 0.0',
                 'mailbridge_store_up 1.0', "mailbridge_ready 0.0",
                 "# TYPE mailbridge_api_calls_total counter",
                 "# TYPE mailbridge_api_latency_seconds histogram",
                 "# TYPE mailbridge_rule_reload_failures_total counter"):
        assert line in body, line
    assert leaks(body) == []


async def test_metrics_count_what_another_process_wrote(tmp_path):
    """`mailbridge ingest` writes the store from another process: scraped counts include it."""
    path = tmp_path / "db"
    app = create_app(lambda: Store(path), None, make_settings())
    async with client(app) as c:
        assert 'mailbridge_messages{outcome="regular"} 0.0' in (await c.get("/metrics")).text
        other = Store(path)
        mid = other.stage(RawMessage(raw_mail("hello"), "pipe", None, 1.0)).id
        other.finish_message(mid, "regular", "not automated")
        other.close()
        assert 'mailbridge_messages{outcome="regular"} 1.0' in (await c.get("/metrics")).text
    app.state.close()


async def test_dashboard_shows_messages_tickets_failures_chart(filled):
    store = filled.store
    evil = store.stage(RawMessage(raw_mail("<script>alert(1)</script> & co"), "pipe", None,
                                  1.0)).id
    store.finish_message(evil, "regular", "not automated <b>")
    app = create_app(AsyncStore(store), runtime_ok(), make_settings())
    async with client(app) as c:
        r = await c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = r.text
    for text in ("Backup failed on SRV01", "Disk full on SRV02", "Weekly report",
                 "veeam.toml:backup-failed", 'class="o o-created"', 'class="o o-failed"',
                 "ates:Veeam:8932", "Open tickets", "Backup failed",  # ticket title
                 "404 OemNotFoundException", "Dead outbox rows", "<svg", "<rect",
                 "rules-7", "degraded", "imap:inbox"):
        assert text in page, text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "not automated &lt;b&gt;" in page
    assert leaks(page) == []


async def test_dashboard_refuses_foreign_host_names(tmp_path):
    app = create_app(lambda: Store(tmp_path / "db"), None, make_settings())
    async with client(app) as c:
        r = await c.get("/", headers={"Host": "attacker.example"})
        assert r.status_code == 421
        assert (await c.get("/", headers={"Host": "localhost:8025"})).status_code == 200
        assert (await c.get("/healthz", headers={"Host": "[::1]:8025"})).status_code == 200
    app.state.close()


async def test_vendor_api_needs_the_key(tmp_path):
    accounts = [{"id": "ACME-001", "name": "Acme Ltd", "senders": ["x@acme.example"]},
                {"id": 42, "name": None}]
    app = create_app(lambda: Store(tmp_path / "db"), None, make_settings(),
                     accounts_provider=lambda: accounts)
    async with client(app) as c:
        assert (await c.get("/api/vendor/accounts")).status_code == 401
        r = await c.get("/api/vendor/accounts", headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and VENDOR_KEY not in r.text
        r = await c.get("/api/vendor/accounts", headers={"X-API-Key": VENDOR_KEY})
        assert r.status_code == 200
        assert r.json() == {"accounts": [{"id": "ACME-001", "name": "Acme Ltd"},
                                         {"id": "42", "name": "42"}]}
        r = await c.get("/api/vendor/product-groups", headers={"X-API-Key": VENDOR_KEY})
        assert r.json() == {"productGroups": [
            {"name": "backup", "alertTypes": ["Backup Failed", "Backup Warning"]},
            {"name": "servers", "alertTypes": ["Host Down"]}]}
        # The vendor API answers whatever Host the PSA's request carries.
        r = await c.get("/api/vendor/product-groups",
                        headers={"X-API-Key": VENDOR_KEY, "Host": "bridge.msp.example"})
        assert r.status_code == 200
    app.state.close()


async def test_vendor_api_is_off_without_a_key(tmp_path):
    settings = settings_from_dict({})
    app = create_app(lambda: Store(tmp_path / "db"), None, settings)
    async with client(app) as c:
        r = await c.get("/api/vendor/accounts", headers={"X-API-Key": ""})
        assert r.status_code == 404
    app.state.close()


async def test_serve_over_real_http_and_leave_signals_alone(tmp_path):
    fill(tmp_path / "db").store.close()
    app = create_app(lambda: Store(tmp_path / "db"), runtime_ok(), make_settings())
    stop = asyncio.Event()
    ports: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(serve(app, "127.0.0.1", 0, stop, on_listening=ports.append))
    while not ports:  # serve() reports the bound port once the socket listens
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and "dead outbox" in r.text
        page = await c.get("/")
        assert "Backup failed on SRV01" in page.text
        assert "mailbridge_messages" in (await c.get("/metrics")).text
        assert signal.getsignal(signal.SIGTERM) is before  # the daemon keeps its signals
    stop.set()
    await asyncio.wait_for(task, 10)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{ports[0]}/healthz")


async def test_serve_on_a_port_in_use_raises_at_once(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        app = create_app(lambda: Store(tmp_path / "db"), None, make_settings())
        with pytest.raises(OSError):
            await asyncio.wait_for(serve(app, "127.0.0.1", busy.getsockname()[1],
                                         asyncio.Event()), 5)


async def test_an_unreadable_store_is_reported_not_hidden(tmp_path):
    def broken() -> Store:
        raise OSError("disk gone")

    app = create_app(broken, runtime_ok(), make_settings())
    async with client(app) as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and "store unreadable: disk gone" in r.json()["reasons"][0]
        r = await c.get("/metrics")
        assert r.status_code == 200 and "mailbridge_store_up 0.0" in r.text
        assert 'mailbridge_source_connected{source="imap:inbox"} 1.0' in r.text
    app.state.close()


async def test_a_reload_can_change_the_vendor_key(tmp_path):
    app = create_app(lambda: Store(tmp_path / "db"), None, make_settings())
    app.state.settings = settings_from_dict({"http": {"vendor_api_key": "rotated-key-42"}})
    async with client(app) as c:
        assert (await c.get("/api/vendor/product-groups",
                            headers={"X-API-Key": VENDOR_KEY})).status_code == 401
        r = await c.get("/api/vendor/product-groups", headers={"X-API-Key": "rotated-key-42"})
        assert r.json() == {"productGroups": []}
    app.state.close()
