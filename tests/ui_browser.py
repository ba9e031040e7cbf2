"""A real browser for the UI tests: Debian's Chromium, driven by Playwright.

Never a downloaded browser: the tests use the machine's Chromium
(/usr/bin/chromium, or $CHROMIUM_PATH).  Without one they skip, or fail
under REQUIRE_BROWSER=1 (as in CI).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

#: Runs in every page before its own scripts: records CSP violations.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def chromium_path() -> str:
    """The Chromium to drive; skips (or fails under REQUIRE_BROWSER=1) when there is none."""
    why = None
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    if not os.path.exists(path):
        path = shutil.which("chromium")
        why = None if path else "no Chromium found (/usr/bin/chromium; apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        why = "Playwright is not installed (pip install -e '.[test]')"
    if why:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return path


@contextlib.asynccontextmanager
async def launch_chromium():
    from playwright.async_api import async_playwright

    path = chromium_path()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Watch:
    """What a page did: every request it made, and any error it hit."""

    def __init__(self, page) -> None:
        self.page = page
        self.requests: list = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)

    def urls(self) -> list[str]:
        return [r.url for r in self.requests]

    def outside(self) -> list[str]:
        """Requests that left 127.0.0.1 (data: URLs stay in the page)."""
        return [u for u in self.urls() if not u.startswith("data:") and urlsplit(u).hostname != "127.0.0.1"]

    async def check(self, allow_errors: tuple[str, ...] = ()) -> None:
        """No request left 127.0.0.1, no CSP violation, no script error (but those allowed)."""
        outside = self.outside()
        assert outside == [], f"requests left 127.0.0.1: {outside}"
        if not self.page.is_closed():
            violations = await self.page.evaluate("window.__cspViolations")
            assert violations == [], f"Content-Security-Policy violations: {violations}"
        unexpected = [e for e in self.errors if not any(a in e for a in allow_errors)]
        assert unexpected == [], f"errors in the page: {unexpected}"


@contextlib.asynccontextmanager
async def open_page(browser, allow_errors: tuple[str, ...] = (), **context_options):
    """A page in a fresh context (its own sessionStorage), watched; checked when it closes."""
    context = await browser.new_context(**context_options)
    await context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    watch = Watch(page)
    try:
        yield page, watch
        await watch.check(allow_errors)
    finally:
        await context.close()


async def save_screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path
