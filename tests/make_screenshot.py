"""Take docs/screenshot.png: the demo job on its tree page, in headless Chromium.

    python -m tests.make_screenshot [docs/screenshot.png]

Starts `sca-progress serve` on a free port (embedded Redis in a temporary
directory), runs the demo against it, and shoots the tree page once the
processing step is under way: parts running, waiting, and failed.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from sca_progress.server.demo import run_demo

from .procs import start_service, stop_service
from .ui_browser import launch_chromium

JOB = "_portal.job123"


async def shoot(base: str, out: Path) -> None:
    async with launch_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1000, "height": 760})
        page.set_default_timeout(120_000)
        # Seed 13 fails three of the first eight parts early: the shot shows every status.
        demo = asyncio.create_task(run_demo(base, speed=1, seed=13, job=JOB))
        await page.goto(f"{base}/ui/{JOB}")
        await page.locator(f'li[data-key="{JOB}.processing"] > .row .toggle').click()
        await page.locator(".status.st-failed").nth(1).wait_for()
        await page.wait_for_timeout(400)         # let the bars finish their transition
        await page.screenshot(path=str(out))
        demo.cancel()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data:
        proc, base, _ = start_service(["--data-dir", data])
        try:
            asyncio.run(shoot(base, out))
        finally:
            stop_service(proc)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
