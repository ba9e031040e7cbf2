"""The web UI in a real browser (Debian's Chromium through Playwright): pages, live updates, safety.

Every page is watched (tests/ui_browser.py): no request may leave 127.0.0.1,
no Content-Security-Policy violation and no script error may happen.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import re

import pytest

from .procs import free_port, start_service, stop_service
from .ui_browser import launch_chromium, open_page, save_screenshot

pytestmark = pytest.mark.timeout(120)

MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'


@pytest.fixture
async def browser():
    async with launch_chromium() as b:
        yield b


class Ui:
    """One page of the UI, and the service behind it."""

    def __init__(self, base: str, http, page, watch) -> None:
        self.base, self.http, self.page, self.watch = base, http, page, watch

    async def post(self, key: str, body) -> dict:
        status, node, _ = await self.http("POST", f"{self.base}/status/{key}", body)
        assert status == 200, node
        return node

    async def open(self, path: str):
        response = await self.page.goto(self.base + path)
        await self.expect(self.page.locator("#live")).to_have_text("live")
        return response

    def row(self, key: str):
        return self.page.locator(f'li.node[data-key="{key}"]')

    def part(self, key: str, selector: str):
        """An element of *key*'s own row (not of its children's)."""
        return self.page.locator(f'li.node[data-key="{key}"] > .row {selector}')

    def bar(self, key: str):
        return self.part(key, ".progress")

    @staticmethod
    def expect(locator):
        from playwright.async_api import expect

        return expect(locator)


@pytest.fixture
def open_ui(browser, server, http):
    """open_ui(**browser context options): a page on the `server` fixture, as a Ui."""
    base, app = server

    @contextlib.asynccontextmanager
    async def open_ui(**options):
        async with open_page(browser, **options) as (page, watch):
            yield Ui(base, http, page, watch)
        # The server lets go of the page's streams before it stops: a stream
        # still reading its snapshot then would find Redis closed under it.
        hub = app.settings["service"].hub
        for _ in range(100):
            if hub.subscriptions() == 0:
                break
            await asyncio.sleep(0.05)

    return open_ui


@pytest.fixture
async def ui(open_ui):
    async with open_ui(viewport={"width": 1100, "height": 800}) as ui:
        yield ui


async def test_tree_page_follows_updates_without_reload(ui):
    await ui.post("_t.job.a", {"progress": 0.2, "status": "running", "msg": "thawing"})
    await ui.post("_t.job.b", {"progress": 0, "status": "waiting"})
    await ui.open("/ui/_t.job")
    expect = ui.expect
    await expect(ui.bar("_t.job")).to_have_attribute("aria-valuenow", "10")
    await expect(ui.bar("_t.job.a")).to_have_attribute("aria-valuenow", "20")
    await expect(ui.part("_t.job.a", ".msg")).to_have_text("thawing")
    await expect(ui.part("_t.job", ".counts")).to_contain_text("1 running")
    await ui.page.evaluate("window.__sameDocument = true")

    await ui.post("_t.job.a", {"progress": 1, "status": "finished", "msg": "thawed"})
    await ui.post("_t.job.b", {"progress": 0.5, "status": "running"})
    await expect(ui.bar("_t.job.a")).to_have_attribute("aria-valuenow", "100")
    await expect(ui.bar("_t.job")).to_have_attribute("aria-valuenow", "75")
    await expect(ui.part("_t.job.a", ".status")).to_have_text("finished")
    await expect(ui.part("_t.job.a", ".status")).to_have_class(re.compile(r"\bst-finished\b"))
    await expect(ui.part("_t.job.b", ".status")).to_have_class(re.compile(r"\bst-running\b"))
    await expect(ui.part("_t.job", ".counts")).to_contain_text("1 finished")
    await expect(ui.part("_t.job.a", ".times")).to_have_text(re.compile(r"^took \d+s$"))
    await expect(ui.part("_t.job.b", ".times")).to_have_text(re.compile(r"^elapsed \d+s"))
    assert await ui.page.evaluate("window.__sameDocument") is True   # no reload

    # A new child appears, a deleted one goes.
    await ui.post("_t.job.c", {"progress": 0.1, "msg": "late"})
    await expect(ui.part("_t.job.c", ".msg")).to_have_text("late")
    status, _, _ = await ui.http("DELETE", f"{ui.base}/status/_t.job.b")
    assert status == 204
    await expect(ui.row("_t.job.b")).to_have_count(0)
    bar = ui.bar("_t.job")
    assert await bar.get_attribute("role") == "progressbar"
    assert await bar.get_attribute("aria-valuemin") == "0" and await bar.get_attribute("aria-valuemax") == "100"
    assert "Overall progress of job" == await bar.get_attribute("aria-label")
    await save_screenshot(ui.page, "tree.png")


async def test_times_percentages_and_counts_say_what_they_mean(ui):
    """No progress reads 0% (it counts as 0 in its parent); a waiting step runs no
    clock; status chips keep one order; the page says what striped bars are."""
    await ui.post("_m.job.z", {"status": "finished", "progress": 1})
    await ui.post("_m.job.a", {"status": "running", "progress": 0.5})
    await ui.post("_m.job.w", {"status": "waiting"})
    await ui.post("_m.job.n", {"msg": "no status, no progress"})
    await ui.open("/ui/_m.job")
    await ui.expect(ui.part("_m.job", ".counts")).to_have_text("1 running1 waiting1 finished1 no status")
    await ui.expect(ui.part("_m.job.n", ".percent")).to_have_text("0%")
    await ui.expect(ui.bar("_m.job.n")).to_have_attribute("aria-valuenow", "0")
    await ui.expect(ui.part("_m.job.w", ".times")).to_have_text("not started")
    await ui.expect(ui.part("_m.job.a", ".times")).to_have_text(re.compile(r"^elapsed \d+s"))
    await ui.expect(ui.page.locator("p.legend")).to_contain_text("Striped bars are overall progress")


async def test_every_status_has_its_colour(ui):
    statuses = ["waiting", "running", "finished", "failed", "canceled", "paused", "thawing"]
    for i, status in enumerate(statuses):
        await ui.post(f"_c.job.n{i}", {"status": status, "progress": 0.5})
    await ui.open("/ui/_c.job")
    colours = {}
    for i, status in enumerate(statuses):
        badge = ui.part(f"_c.job.n{i}", ".status")
        await ui.expect(badge).to_have_text(status)
        colours[status] = await badge.evaluate("e => getComputedStyle(e).backgroundColor")
    assert len(set(colours.values())) == len(statuses)           # one colour each
    await ui.expect(ui.part("_c.job.n6", ".status")).to_have_class("status st-other")


async def test_expand_down_to_four_levels_then_open_deeper_nodes_on_their_own_page(ui):
    keys = ["_d.job.l1", "_d.job.l1.l2", "_d.job.l1.l2.l3", "_d.job.l1.l2.l3.l4",
            "_d.job.l1.l2.l3.l4.l5", "_d.job.l1.l2.l3.l4.l5.l6"]
    await ui.post(keys[-1], {"progress": 0.4, "msg": "deep down"})
    await ui.open("/ui/_d.job")
    for key in keys[:3]:                                          # levels 1, 2, 3 expand in place
        toggle = ui.part(key, ".toggle")
        await ui.expect(toggle).to_have_attribute("aria-expanded", "false")
        await toggle.click()
        await ui.expect(toggle).to_have_attribute("aria-expanded", "true")
    await ui.expect(ui.row(keys[3])).to_be_visible()
    assert await ui.part(keys[3], ".toggle").count() == 0      # level 4: a link instead
    await ui.part(keys[3], "a.open").click()
    await ui.page.wait_for_url(f"{ui.base}/ui/{keys[3]}")
    await ui.expect(ui.page.locator("#live")).to_have_text("live")
    await ui.expect(ui.bar(keys[3])).to_have_attribute("aria-valuenow", "40")
    await ui.part(keys[4], ".toggle").click()
    await ui.expect(ui.part(keys[5], ".msg")).to_have_text("deep down")
    # Collapsing hides the children; the breadcrumbs lead back up.
    await ui.part(keys[4], ".toggle").click()
    await ui.expect(ui.row(keys[5])).to_have_count(0)
    await ui.expect(ui.page.locator("#crumbs a")).to_have_text(["all", "_d", "job", "l1", "l2", "l3"])


async def test_a_wide_node_shows_a_page_of_children_and_more_on_demand(ui):
    await ui.http("POST", f"{ui.base}/status", [{"key": f"_w.job.p{i:02d}", "progress": 0.5} for i in range(12)])
    await ui.open("/ui/_w.job?limit=5")
    children = ui.page.locator('li[data-key="_w.job"] > ul.children > li')
    more = ui.page.locator('li[data-key="_w.job"] > button.more')
    await ui.expect(children).to_have_count(5)
    await ui.expect(more).to_have_text("Show more (7 more)")
    await more.click()
    await ui.expect(children).to_have_count(10)
    await more.click()
    await ui.expect(children).to_have_count(12)
    await ui.expect(more).to_be_hidden()
    assert await children.evaluate_all("els => els.map(e => e.dataset.key)") == [
        f"_w.job.p{i:02d}" for i in range(12)]


async def test_listing_shows_recent_trees_first_and_new_jobs_live(ui):
    for job in ("j1", "j2"):
        await ui.post(f"_l.{job}.step", {"progress": 0.5, "status": "running"})
    await ui.open("/ui/_l")
    entries = ui.page.locator("ul.listing > li")
    keys = "els => els.map(e => e.dataset.key)"
    await ui.expect(entries).to_have_count(2)
    assert await entries.evaluate_all(keys) == ["_l.j2", "_l.j1"]
    await ui.expect(ui.bar("_l.j2")).to_have_attribute("aria-valuenow", "50")
    await ui.expect(ui.part("_l.j2", "a.name")).to_have_attribute("href", "/ui/_l.j2")

    await ui.post("_l.j3.step", {"progress": 0.1, "status": "waiting"})       # a new job: on top
    await ui.expect(entries).to_have_count(3)
    await ui.expect(entries.first).to_have_attribute("data-key", "_l.j3")
    await ui.post("_l.j1.step", {"progress": 0.9})                            # an update: moves up
    await ui.expect(entries.first).to_have_attribute("data-key", "_l.j1")
    await ui.expect(ui.bar("_l.j1")).to_have_attribute("aria-valuenow", "90")
    await ui.http("DELETE", f"{ui.base}/status/_l.j2")
    await ui.expect(entries).to_have_count(2)
    await save_screenshot(ui.page, "listing.png")

    # The top level lists namespaces; a new one appears live.
    await ui.open("/")
    await ui.expect(ui.part("_l", ".counts")).to_have_text("2 trees")
    await ui.post("_l2.job.a", {"progress": 0.3})
    await ui.expect(ui.page.locator("ul.listing > li").first).to_have_attribute("data-key", "_l2")


async def test_listing_pages_with_more(ui):
    await ui.http("POST", f"{ui.base}/status", [{"key": f"_m.j{i}.a", "progress": 0.1} for i in range(7)])
    await ui.open("/ui/_m?limit=3")
    entries = ui.page.locator("ul.listing > li")
    await ui.expect(entries).to_have_count(3)
    await ui.page.locator("main > button.more").click()
    await ui.expect(entries).to_have_count(6)
    await ui.page.locator("main > button.more").click()
    await ui.expect(entries).to_have_count(7)
    await ui.expect(ui.page.locator("main > button.more")).to_be_hidden()
    assert await entries.evaluate_all("els => els.map(e => e.dataset.key)") == [f"_m.j{i}" for i in range(6, -1, -1)]


async def test_what_producers_send_is_shown_as_text_and_never_runs(ui):
    short = '<img src=x onerror="window.__pwned=3">'                  # a status is at most 64 characters
    await ui.post("_x.job", {"name": MARKUP})
    await ui.post("_x.job.a", {"msg": MARKUP, "name": MARKUP, "note": MARKUP, "status": short, "progress": 0.5})

    await ui.open("/ui/_x.job")
    await ui.expect(ui.part("_x.job.a", ".msg")).to_have_text(MARKUP)
    await ui.expect(ui.part("_x.job.a", ".name")).to_have_text(MARKUP)
    await ui.expect(ui.part("_x.job.a", ".fields dd")).to_have_text(MARKUP)
    await ui.expect(ui.part("_x.job.a", ".status")).to_have_text(short)
    await ui.expect(ui.part("_x.job.a", ".status")).to_have_class("status st-other")
    await ui.expect(ui.part("_x.job", ".counts")).to_have_text(f"1 {short}")
    await _nothing_ran(ui.page)

    await ui.open("/ui/_x")
    await ui.expect(ui.part("_x.job", ".name")).to_have_text(MARKUP)
    await _nothing_ran(ui.page)


async def _nothing_ran(page):
    await page.wait_for_timeout(300)                                   # time for an onerror to fire
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img, main script, main b").count() == 0


async def test_security_headers_on_every_ui_response(server):
    base, _ = server
    for path in ("/", "/ui/_portal", "/ui/_portal.job1", "/static/main.js", "/static/style.css"):
        status, response = await _get(base + path)
        csp = response.headers.get("Content-Security-Policy", "")
        assert status == 200, path
        assert "script-src 'self'" in csp and "default-src 'self'" in csp and "object-src 'none'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    status, response = await _get(f"{base}/ui/bad%20key")
    assert status == 400 and b"invalid key" in response.body
    page = (await _get(base + "/"))[1].body.decode()
    assert "<script" in page and re.findall(r"<script[^>]*>(.*?)</script>", page, re.S) == [""]  # no inline script
    assert " style=" not in page and "<style" not in page


async def _get(url):
    """GET a page or an asset (not JSON): (status, response)."""
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(url, raise_error=False)
    return response.code, response


async def test_no_request_leaves_the_service(ui):
    await ui.post("_n.job.a", {"progress": 0.5})
    await ui.open("/ui/_n.job")
    await ui.part("_n.job.a", ".name").wait_for()
    urls = ui.watch.urls()
    assert any(u.endswith("/static/main.js") for u in urls) and any("/events/_n.job" in u for u in urls)
    assert not any("/auth/ticket" in u for u in urls)                       # no token: no ticket
    assert ui.watch.outside() == []


async def test_phone_width_has_no_horizontal_overflow(open_ui):
    async with open_ui(viewport={"width": 360, "height": 740}, is_mobile=True) as ui:
        page = ui.page
        long_msg = "a-very-long-message-without-any-space-" * 8
        await ui.post("_p.job-with-a-rather-long-name.stage_input.file-with-a-long-name",
                      {"progress": 0.3, "status": "running", "msg": long_msg, "custom": long_msg})
        await ui.open("/ui/_p.job-with-a-rather-long-name")
        await ui.part("_p.job-with-a-rather-long-name.stage_input", ".toggle").click()
        await ui.expect(ui.part("_p.job-with-a-rather-long-name.stage_input.file-with-a-long-name", ".msg")
                        ).to_have_text(long_msg)
        widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        await save_screenshot(page, "phone.png")


async def test_times_follow_the_servers_clock_not_the_browsers(open_ui):
    async with open_ui() as ui:
        # The browser's clock is three days fast: elapsed times must not show it.
        await ui.page.clock.install(time=datetime.datetime.now() + datetime.timedelta(days=3))
        await ui.post("_k.job.a", {"progress": 0.1})
        await asyncio.sleep(1)
        await ui.post("_k.job.a", {"progress": 0.2})
        await ui.open("/ui/_k.job")
        await ui.expect(ui.part("_k.job.a", ".times")).to_have_text(re.compile(r"^elapsed \d+s · ETA \d+s$"))


async def test_a_token_goes_with_every_call_and_buys_a_ticket_for_the_feed(ui):
    await ui.post("_a.job.a", {"progress": 0.5})
    headers = {}

    async def ticket(route):
        headers.update(route.request.headers)
        await route.fulfill(json={"ticket": "t-123"})

    await ui.page.route("**/auth/ticket", ticket)                 # the server side comes later
    await ui.open("/ui/_a#token=secret-1")
    assert ui.page.url == f"{ui.base}/ui/_a"                      # the token left the URL
    assert await ui.page.evaluate("sessionStorage.getItem('progress-token')") == "secret-1"
    await ui.expect(ui.row("_a.job")).to_be_visible()
    assert headers["authorization"] == "Bearer secret-1"
    events = [r for r in ui.watch.requests if "/events/" in r.url]
    assert events and events[-1].url.endswith("/events/_a?ticket=t-123")
    status_calls = [r for r in ui.watch.requests if "/status/" in r.url]
    assert status_calls and {await r.header_value("authorization") for r in status_calls} == {"Bearer secret-1"}

    # Pasting a token works as well; clearing it goes back to plain requests.
    await ui.page.locator(".token summary").click()
    await ui.page.locator("#token-input").fill("secret-2")
    await ui.page.locator("#token-form button[type=submit]").click()
    await ui.expect(ui.page.locator("#token-summary")).to_have_text("token ✓")
    assert await ui.page.evaluate("sessionStorage.getItem('progress-token')") == "secret-2"
    await ui.expect(ui.page.locator("#live")).to_have_text("live")
    assert headers["authorization"] == "Bearer secret-2"


async def test_the_page_catches_up_after_a_server_restart(browser, redis_url, prefix, engine):
    port = free_port()
    args = ["--redis-url", redis_url, "--prefix", prefix, "--port", str(port)]
    proc, base, _ = start_service(args)
    # The browser logs the stream cut by the restart and its refused reconnections: expected here.
    network_errors = ("net::ERR_INCOMPLETE_CHUNKED_ENCODING", "net::ERR_CONNECTION_REFUSED")
    async with open_page(browser, allow_errors=network_errors) as (page, watch):
        ui = Ui(base, None, page, watch)
        try:
            await engine.apply([("_r.job.a", {"progress": 0.2})])
            await ui.open("/ui/_r.job")
            await ui.expect(ui.bar("_r.job.a")).to_have_attribute("aria-valuenow", "20")
        finally:
            stop_service(proc)
        await ui.expect(page.locator("#live")).not_to_have_text("live")
        await engine.apply([("_r.job.a", {"progress": 0.9, "status": "finished"}), ("_r.job.b", {"progress": 0})])
        proc, _, _ = start_service(args)
        try:
            await ui.expect(ui.bar("_r.job.a")).to_have_attribute("aria-valuenow", "90", timeout=30_000)
            await ui.expect(ui.row("_r.job.b")).to_be_visible()
            await ui.expect(page.locator("#live")).to_have_text("live")
        finally:
            stop_service(proc)


async def test_a_node_that_stops_changing_is_marked_stalled(browser, redis_url, prefix, engine):
    """--stall-after 1: the mark comes without a message (the page knows the
    server's --stall-after from the feed's snapshot) and goes with the next change."""
    proc, base, _ = start_service(["--redis-url", redis_url, "--prefix", prefix, "--stall-after", "1"])
    try:
        async with open_page(browser) as (page, watch):
            ui = Ui(base, None, page, watch)
            await engine.apply([("_sl.job.a", {"progress": 0.3, "status": "running"}),
                                ("_sl.job.b", {"progress": 0, "status": "waiting"})])
            await ui.open("/ui/_sl.job")
            mark = ui.part("_sl.job.a", ".chip.stalled")
            await ui.expect(mark).to_have_count(1)
            await ui.expect(mark).to_be_hidden()
            await ui.expect(mark).to_be_visible(timeout=5_000)
            await ui.expect(mark).to_have_attribute("title", re.compile(r"^Running, but no change since"))
            await ui.expect(ui.part("_sl.job.b", ".chip.stalled")).to_be_hidden()  # waiting: resting
            await _post(base, "/status/_sl.job.a", {"progress": 0.5})  # through the service: the feed tells
            await ui.expect(mark).to_be_hidden()
            # An eta while it moves; none shown once it stalls (it would only count down to a time long past).
            await _post(base, "/status/_sl.job.c", {"progress": 0.1, "status": "running"})
            await asyncio.sleep(0.2)
            await _post(base, "/status/_sl.job.c", {"progress": 0.3})
            times = ui.part("_sl.job.c", ".times")
            await ui.expect(times).to_contain_text("ETA")
            await ui.expect(ui.part("_sl.job.c", ".chip.stalled")).to_be_visible(timeout=5_000)
            await ui.expect(times).not_to_contain_text("ETA")
    finally:
        stop_service(proc)


async def _post(base: str, path: str, body: dict) -> None:
    from tornado.httpclient import AsyncHTTPClient

    import orjson

    resp = await AsyncHTTPClient().fetch(base + path, method="POST", body=orjson.dumps(body))
    assert resp.code == 200


async def test_rows_draw_their_progress_history_and_the_page_node_a_chart(browser, redis_url, prefix):
    """--history-step 0.05: a second of updates leaves a history of many samples."""
    proc, base, _ = start_service(["--redis-url", redis_url, "--prefix", prefix, "--history-step", "0.05"])
    try:
        for i in range(8):
            await _post(base, "/status/_hi.job.a", {"progress": i / 10, "status": "running"})
            await _post(base, "/status/_hi.job.b", {"progress": i / 20})
            await asyncio.sleep(0.06)
        async with open_page(browser, viewport={"width": 1100, "height": 800}) as (page, watch):
            ui = Ui(base, None, page, watch)
            await ui.open("/ui/_hi.job")
            spark = ui.part("_hi.job.a", "svg.spark")
            await ui.expect(spark).to_have_attribute("data-points", re.compile(r"^([5-9]|\d\d)$"))
            await ui.expect(spark).to_have_attribute("aria-label", re.compile(r"^progress history over .+: 0% to 70%$"))
            points = await spark.locator("polyline").get_attribute("points")
            ys = [float(p.split(",")[1]) for p in points.split()]
            assert ys[0] == 20 and ys[-1] < 7 and ys == sorted(ys, reverse=True)  # rising from 0 %
            await ui.expect(ui.part("_hi.job.b", "svg.spark")).to_have_attribute(
                "aria-label", re.compile(r": 0% to 35%$"))
            chart = page.locator("figure.history")
            await ui.expect(chart).to_be_visible()
            await ui.expect(chart.locator("figcaption")).to_contain_text("a sample every")
            await ui.expect(chart.locator("polyline.history-line")).to_have_attribute("points", re.compile(r"\d"))
            # The feed moves the last point of the sparkline.
            await _post(base, "/status/_hi.job.a", {"progress": 1})
            await ui.expect(spark).to_have_attribute("aria-label", re.compile(r"to 100%$"))
            # A row that appears live draws the states the page has seen, before any history is read.
            await _post(base, "/status/_hi.job.c", {"progress": 0.1})
            await ui.expect(ui.part("_hi.job.c", ".percent")).to_have_text("10%")
            await _post(base, "/status/_hi.job.c", {"progress": 0.4})
            await ui.expect(ui.part("_hi.job.c", "svg.spark")).to_have_attribute(
                "aria-label", re.compile(r": 10% to 40%$"))
            # One update, then nothing: the line holds its progress until now (a stall shows flat).
            await _post(base, "/status/_hi.job.d", {"progress": 0.3, "status": "running"})
            one = ui.part("_hi.job.d", "svg.spark")
            await ui.expect(one).to_have_attribute("data-points", "2")
            await ui.expect(one).not_to_have_class(re.compile(r"\bempty\b"))
            flat = [float(p.split(",")[1]) for p in (await one.locator("polyline").get_attribute("points")).split()]
            assert flat[0] == flat[-1] == 14  # 30 % of a 20 px box, from its update to now
            await save_screenshot(page, "history.png")
    finally:
        stop_service(proc)
