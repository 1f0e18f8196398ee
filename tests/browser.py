"""A real headless Chromium (Debian's `chromium`, driven by Playwright) on our web app: serve
the app on a free loopback port, open one page that records every console error, page error
and failed request. Shared by the dashboard and `/rules/diff` browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from typing import Any, AsyncIterator

from bridge.operator.web import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextlib.asynccontextmanager
async def browser_page(app: Any, playwright_api: Any,
                       problems: list[str]) -> AsyncIterator[tuple[Any, str]]:
    """(page, base URL) of `app` served on loopback; problems seen are appended."""
    stop = asyncio.Event()
    ports: list[int] = []
    server = asyncio.create_task(serve(app, "127.0.0.1", 0, stop, on_listening=ports.append))
    while not ports:
        await asyncio.sleep(0.01)  # the listener is bound in the same loop, a moment later
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            yield page, f"http://127.0.0.1:{ports[0]}"
            await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
