"""The dashboard's `/rules/diff` page in a real headless Chromium (Debian's `chromium`, driven
by Playwright), for a configured `[rules] candidate_directory`.

The first view finds no result and starts the diff in the background (the page says it is
computing and refreshes itself); a later view shows the messages the candidate would change
and the totals, with no console error (CSP, missing resources, scripts), and leaves a
screenshot in test-artifacts/rules-diff.png."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from bench import corpus
from bridge.config import load_settings
from bridge.models import RawMessage
from bridge.operator.web import create_app
from bridge.store import Store
from tests.helpers import ROOT, write_config
from tests.browser import CHROMIUM, browser_page
from tests.test_web import runtime_ok

ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "rules-diff.png"

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


class _NoPsa:
    url = "http://127.0.0.1:9"  # never called: the diff's peers are dry-run ones


def staged_history(tmp: Path) -> tuple[Path, int]:
    """60 mixed alerts of the last hours staged in the store; how many are Zabbix's."""
    config = write_config(tmp, _NoPsa())
    now = time.time()
    mails = corpus.backlog(60, now - 3 * 3600, now - 600, seed=23)
    store = Store(tmp / "mailbridge.db")
    try:
        store.stage_many([RawMessage(m.raw, "imap:alerts", f"1:{i}", m.at)
                          for i, m in enumerate(mails)])
    finally:
        store.close()
    return config, sum(1 for m in mails if m.family == "zabbix")


async def test_rules_diff_page_in_a_real_browser(tmp_path):
    config, zabbix = staged_history(tmp_path)
    assert zabbix >= 3
    candidate = tmp_path / "candidate"
    shutil.copytree(ROOT / "rules", candidate)
    rules = candidate / "20-zabbix.toml"
    rules.write_text(rules.read_text().replace('alert_type = "Problem"',
                                               'alert_type = "Trigger"'))
    settings = load_settings(config)
    settings = settings.model_copy(update={"rules": settings.rules.model_copy(
        update={"candidate_directory": candidate})})
    app = create_app(lambda: Store(settings.store.path), runtime_ok(), settings, refresh=300)
    problems: list[str] = []
    try:
        async with browser_page(app, playwright_api, problems) as (page, base):
            url = f"{base}/rules/diff"
            response = await page.goto(url, wait_until="load")
            assert response is not None and response.status == 200
            assert "Computing the diff" in await page.locator("#computing").inner_text()
            deadline = time.monotonic() + 120
            while await page.locator("#changes").count() == 0:
                assert time.monotonic() < deadline, await page.content()
                await asyncio.sleep(0.5)
                await page.goto(url, wait_until="load")
            rows = page.locator("#changes tbody tr")
            assert await rows.count() == zabbix
            text = await page.locator("#changes").inner_text()
            assert "monitoring / Problem" in text and "monitoring / Trigger" in text
            assert "20-zabbix.toml:zabbix" in text
            summary = await page.locator("#summary").inner_text()
            assert f"{zabbix} would change" in summary and "60 messages" in summary
            assert await page.locator("#totals tbody tr").count() >= 6
            # Served from the cache: another view starts nothing.
            await page.goto(url, wait_until="load")
            assert await page.locator("#computing").count() == 0
            ARTIFACT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACT), full_page=True)
    finally:
        app.state.candidate_diff.close()
    assert problems == []
    assert ARTIFACT.stat().st_size > 10_000
