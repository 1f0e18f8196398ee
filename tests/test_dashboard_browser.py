"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The page must load with no console error (a CSP violation, a missing resource and a script
error all show up there), show the messages of the test run, and leave a screenshot in
test-artifacts/dashboard.png for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.operator.web import create_app
from bridge.store import Store
from tests.browser import CHROMIUM, browser_page
from tests.test_views import fill, leaks
from tests.test_web import make_settings, runtime_ok

ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard.png"

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


async def test_dashboard_in_a_real_browser(tmp_path):
    fill(tmp_path / "db").store.close()
    app = create_app(lambda: Store(tmp_path / "db"), runtime_ok(), make_settings(), refresh=300)
    problems: list[str] = []
    async with browser_page(app, playwright_api, problems) as (page, base):
        response = await page.goto(f"{base}/", wait_until="load")
        assert response is not None and response.status == 200
        rows = page.locator("#messages tbody tr")
        assert await rows.count() == 7
        text = await page.locator("#messages").inner_text()
        for subject in ("Backup failed on SRV01", "Disk full on SRV02", "Weekly report",
                        "Broken alert", "CPU high on SRV03", "Just arrived"):
            assert subject in text
        assert await page.locator("#chart svg rect").count() == 5  # one per outcome seen
        assert "Backup failed" in await page.locator("#tickets").inner_text()
        assert "404 OemNotFoundException" in await page.locator("#failures").inner_text()
        html = await page.content()
        assert leaks(html) == []
        ARTIFACT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACT), full_page=True)
    assert problems == []
    assert ARTIFACT.stat().st_size > 10_000
