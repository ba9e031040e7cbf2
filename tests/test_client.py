"""The Python reporter (sca_progress.client) against a real service process,
real Redis and real RabbitMQ: REST and AMQP, sync and asyncio, throttling,
steps, failures, and the `post` / `get` commands."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import jwt
import pytest

from sca_progress.client import AsyncReporter, Reporter, ReporterError, ReporterWarning, commands, track
from sca_progress.client.config import BadUrl, parse_url

from .conftest import RUN_PREFIX
from .procs import free_port, start_service, stop_service

SECRET = "client-test-secret-of-at-least-32-bytes"
README = Path(__file__).resolve().parent.parent / "README.md"


# -- services ---------------------------------------------------------------------------


class Service:
    """A running `sca-progress serve` process: its URL and what it logged."""

    def __init__(self, args: list[str]) -> None:
        self.proc, self.url, self.log = start_service(args)

    def posts(self) -> int:
        """POST /status requests answered so far (from the access log)."""
        return len(re.findall(r" POST /status \(", self.log()))

    def settled_posts(self) -> int:
        """posts(), once earlier tests' requests have all been logged (the count holds still)."""
        count = self.posts()
        while True:
            time.sleep(0.5)
            if self.posts() == count:
                return count
            count = self.posts()

    def posts_since(self, before: int, expected: int) -> int:
        """POST /status requests logged since *before*: waits for *expected* of them (log lines
        come through a pipe, after the answers), then a little longer for any more."""
        deadline = time.monotonic() + 10
        while self.posts() - before < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        return self.posts() - before

    def get(self, key: str, depth: int = 1, token: str | None = None) -> dict | None:
        req = urllib.request.Request(f"{self.url}/status/{key}?depth={depth}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def wait_for(self, key: str, check, depth: int = 1, timeout: float = 30.0) -> dict:
        """Poll *key* until check(node) holds (AMQP ingestion is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.get(key, depth)
            if node is not None and check(node):
                return node
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {key}: last seen {node}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_service(self.proc)


def _prefix(what: str) -> str:
    return f"{RUN_PREFIX}-client-{what}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def service(redis_url):
    s = Service(["--redis-url", redis_url, "--prefix", _prefix("rest"), "--access-log", "all"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def auth_service(redis_url):
    s = Service(["--redis-url", redis_url, "--prefix", _prefix("auth"), "--jwt-secret", SECRET,
                 "--rate-limit", "10"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def amqp_service(redis_url, amqp_url):
    from .amqp_support import Names

    names = Names()
    s = Service(["--redis-url", redis_url, "--prefix", _prefix("amqp"), "--amqp-url", amqp_url,
                 "--amqp-exchange", names.exchange, "--amqp-queue", names.queue, "--amqp-dead", names.dead,
                 "--amqp-events", names.events, "--batch-wait", "0.02"])
    s.names = names
    try:
        deadline = time.monotonic() + 30
        while "consuming AMQP queue" not in s.log():
            assert time.monotonic() < deadline, s.log()
            time.sleep(0.05)
        yield s
    finally:
        s.stop()
        asyncio.run(names.delete(amqp_url))


def new_key() -> str:
    """A job key of the test's own: its own tree."""
    return f"_client.job-{uuid.uuid4().hex[:10]}"


def token(scope: str) -> str:
    return jwt.encode({"sub": "client-test", "exp": int(time.time()) + 600, "scope": scope}, SECRET,
                      algorithm="HS256")


def dead_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def run_python(code: str, url: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run *code* in a fresh interpreter with SCA_PROGRESS_URL=*url*: (what it did, seconds it took)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SCA_PROGRESS_URL", "SCA_PROGRESS_TOKEN")}
    env.update(SCA_PROGRESS_URL=url, PYTHONWARNINGS="always")  # every warning shown, even from one line
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    return done, time.monotonic() - started


def reporter_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ReporterWarning)]


# -- configuration ------------------------------------------------------------------------


def test_service_urls_as_the_spec_sets_them():
    assert parse_url("http://h:8080") == parse_url("http://h:8080/") == parse_url("http://h:8080/status")
    t = parse_url("http://h:8080/status/_sca.123.prep")
    assert (t.url, t.key, t.is_amqp) == ("http://h:8080", "_sca.123.prep", False)
    t = parse_url("https://example.org/progress/api/status/_portal.j%40x")
    assert (t.url, t.key) == ("https://example.org/progress/api", "_portal.j@x")
    t = parse_url("amqp://u:p@broker:5672/%2F?exchange=jobs&heartbeat=30")
    assert (t.url, t.exchange, t.is_amqp) == ("amqp://u:p@broker:5672/%2F?heartbeat=30", "jobs", True)
    assert parse_url("amqps://broker/").exchange == "progress"
    with pytest.raises(ValueError):
        parse_url("ftp://h/status")
    for bad, reason in (("notaurl", "must be http(s):// or amqp(s)://"), ("ftp://x", "must be http(s):// or amqp(s)://"),
                        ("http://", "no host"), ("http://h:port/status", "bad port")):
        with pytest.raises(BadUrl) as e:
            parse_url(bad)
        assert (e.value.url, e.value.reason, str(e.value)) == (bad, reason, f"bad url {bad!r}: {reason}")


def test_key_and_token_from_the_environment(auth_service, monkeypatch):
    key = new_key()
    monkeypatch.setenv("SCA_PROGRESS_URL", f"{auth_service.url}/status/{key}")
    monkeypatch.setenv("SCA_PROGRESS_TOKEN", token(f"write:{key}"))
    with Reporter() as r:  # the key comes from the URL, the token from its variable
        r.update(progress=0.5, msg="from the environment")
    node = auth_service.get(key, token=token(f"read:{key}"))
    assert (node["status"], node["progress"], node["msg"]) == ("finished", 1, "from the environment")
    monkeypatch.delenv("SCA_PROGRESS_URL")
    with pytest.raises(ValueError, match="needs a key"):
        Reporter()


# -- REST -----------------------------------------------------------------------------------


def test_rest_updates_children_and_weights(service):
    key = new_key()
    r = Reporter(key, service.url, rate=0)
    r.update(progress=0.1, msg="Starting", name="Job", custom={"files": 3})
    stage = r.child("stage_input", weight=10)
    stage.update(progress=0.5, status="running")
    qr = r.child("qrprocess", weight=100)
    qr.update(progress=0.25)
    r.close()
    node = service.get(key, depth=2)
    assert node["msg"] == "Starting" and node["name"] == "Job" and node["custom"] == {"files": 3}
    tasks = {t["key"]: t for t in node["tasks"]}
    assert tasks[f"{key}.stage_input"]["weight"] == 10 and tasks[f"{key}.stage_input"]["status"] == "running"
    assert tasks[f"{key}.qrprocess"]["weight"] == 100
    assert node["progress"] == pytest.approx((10 * 0.5 + 100 * 0.25) / 110)
    assert r.stats.lost == 0 and r.stats.sent >= 3


def test_one_keep_alive_connection(service):
    key = new_key()
    r = Reporter(key, service.url, rate=0)
    before = service.settled_posts()
    for i in range(5):
        r.update(progress=i / 10)
        r.flush()
    transport = r.session._transport
    r.close()
    assert r.stats.requests == 5
    assert transport.http.requests_sent == 5 and transport.http.connections_opened == 1
    assert service.posts_since(before, 5) == 5
    assert service.get(key)["progress"] == pytest.approx(0.4)


async def test_rest_async(service):
    key = new_key()

    async def files():
        for i in range(6):
            await asyncio.sleep(0.01)
            yield f"file{i}"

    async with AsyncReporter(key, service.url) as job:
        steps = job.children(["stage_input", "run"], weight={"stage_input": 10, "run": 100})
        seen = [f async for f in steps[0].track(files(), total=6)]
        async with steps[1].running(msg="Running"):
            steps[1].update(progress=0.5)
            await steps[1].flush()
            assert service.get(f"{key}.run")["progress"] == 0.5
    assert seen == [f"file{i}" for i in range(6)]
    node = service.get(key, depth=2)
    assert node["status"] == "finished" and node["progress"] == 1
    assert [(t["status"], t["progress"], t["weight"]) for t in node["tasks"]] == [
        ("finished", 1, 10), ("finished", 1, 100)]
    assert node["tasks"][1]["msg"] == "Running"


# -- throttling and ordering --------------------------------------------------------------


def test_a_burst_is_throttled_and_its_final_state_kept(service):
    key = new_key()
    r = Reporter(key, service.url, rate=2)
    before = service.settled_posts()
    started = time.monotonic()
    for i in range(1, 3001):
        r.update(progress=i / 3000, msg=f"item {i}")
        if i % 100 == 0:
            time.sleep(0.05)  # a burst of ~1.5 s
    r.update(extra="merged in")  # merged with the last progress and msg, not replacing them
    http = r.session._transport.http
    r.close()
    assert http.requests_sent == r.stats.requests and http.connections_opened == 1
    took = time.monotonic() - started
    assert r.stats.updates == 3001
    # At most 2 rounds a second, the first at once, and the final flush.
    assert r.stats.requests <= 2 + 2 * took, (r.stats, took)
    assert service.posts_since(before, r.stats.requests) == r.stats.requests
    node = service.get(key)
    assert (node["progress"], node["msg"], node["extra"]) == (1, "item 3000", "merged in")


def test_ts_is_when_the_update_was_made_not_when_it_was_sent(service):
    key = new_key()
    slow = Reporter(key, service.url, rate=0.2)  # one round per 5 s
    slow.update(msg="first")
    slow.flush()
    slow.update(msg="older")  # made now, held back by the throttle
    time.sleep(0.01)
    other = Reporter(key, service.url)
    other.update(msg="newer")
    other.close()
    assert service.get(key)["msg"] == "newer"
    slow.close()  # sends "older" with its own, older ts: the service ignores it
    assert slow.stats.lost == 0
    assert service.get(key)["msg"] == "newer"


def test_a_round_keeps_the_order_of_the_last_changes(service):
    """A parent's own progress posted after its child's update is what stays (docs/api.md:
    progress posted to a parent is stored until the next update below it)."""
    key = new_key()
    r = Reporter(key, service.url, rate=0.2)
    r.update(msg="held")       # the first round goes at once ...
    r.update(progress=0.2)     # ... then these wait for the next
    r.child("a").update(progress=0.3)
    r.update(progress=0.9)     # later than the child's: sent after it
    r.close()
    assert service.get(key)["progress"] == pytest.approx(0.9)


# -- steps --------------------------------------------------------------------------------


def test_children_announce_pending_steps_in_one_batch(service):
    key = new_key()
    r = Reporter(key, service.url)
    before = service.settled_posts()
    steps = r.children(["stage_input", "qrprocess", "output_transfer"],
                       weight={"stage_input": 10, "qrprocess": 100, "output_transfer": 2}, msg="Pending")
    r.flush()
    assert service.posts_since(before, 1) == 1
    assert [s.key for s in steps] == [f"{key}.stage_input", f"{key}.qrprocess", f"{key}.output_transfer"]
    node = service.get(key, depth=2)
    assert node["progress"] == 0 and node["_status_counts"] == {"waiting": 3}
    assert [(t["progress"], t["status"], t["weight"], t["msg"]) for t in node["tasks"]] == [
        (0, "waiting", 10, "Pending"), (0, "waiting", 100, "Pending"), (0, "waiting", 2, "Pending")]
    steps[0].update(progress=1, status="finished")
    r.close()
    assert service.get(key)["progress"] == pytest.approx(10 / 112)


def test_context_manager_success_failure_and_cancel(service):
    key = new_key()
    with Reporter(key, service.url) as job:
        with job.child("ok").running(msg="Working"):
            pass
        with pytest.raises(ValueError, match="disk full"):
            with job.child("broken").running():
                job.child("broken").update(progress=0.3)
                raise ValueError("disk full")
        with pytest.raises(KeyboardInterrupt):
            with job.child("stopped").running():
                raise KeyboardInterrupt
        # the job itself fails with what escapes it
        with pytest.raises(RuntimeError):
            with Reporter(f"{key}.inner", service.url):
                raise RuntimeError()
    node = service.get(key, depth=2)
    tasks = {t["key"].rsplit(".", 1)[1]: t for t in node["tasks"]}
    assert (tasks["ok"]["status"], tasks["ok"]["progress"], tasks["ok"]["msg"]) == ("finished", 1, "Working")
    assert "end_time" in tasks["ok"]
    assert (tasks["broken"]["status"], tasks["broken"]["msg"], tasks["broken"]["progress"]) == (
        "failed", "disk full", 0.3)
    assert tasks["stopped"]["status"] == "canceled"
    assert (tasks["inner"]["status"], tasks["inner"]["msg"]) == ("failed", "RuntimeError")
    assert node["status"] == "finished"


def test_track_reports_as_it_goes_and_ends_at_one(service):
    key = new_key()
    seen_midway = None
    for i, item in enumerate(track(range(10), key=key, url=service.url, rate=20)):
        if i == 6:  # 6 of 10 done: the service hears of it while the loop runs
            seen_midway = service.wait_for(key, lambda n: n.get("progress", 0) >= 0.5, timeout=5)
        time.sleep(0.02)
    assert 0.5 <= seen_midway["progress"] < 1 and seen_midway["status"] == "running"
    node = service.get(key)
    assert (node["progress"], node["status"]) == (1, "finished")


def test_track_failure_and_early_stop(service):
    key = new_key()
    r = Reporter(key, service.url)

    def items():
        yield 1
        yield 2
        raise OSError("tape jammed")

    with pytest.raises(OSError):
        for _ in r.child("read").track(items(), total=4):
            pass
    loop = r.child("search").track(range(100))
    for i in loop:
        if i == 40:
            break
    loop.close()  # what a finished for-loop does when the generator is collected
    r.close()
    read = service.get(f"{key}.read")
    assert (read["status"], read["msg"], read["progress"]) == ("failed", "tape jammed", 0.5)
    search = service.get(f"{key}.search")
    assert search["status"] == "running" and 0 < search["progress"] < 1


# -- AMQP -----------------------------------------------------------------------------------


def test_amqp_reporter(amqp_service, amqp_url):
    key = new_key()
    url = f"{amqp_url}?exchange={amqp_service.names.exchange}"
    with Reporter(key, url) as job:
        steps = job.children(["a", "b"], weight={"a": 1, "b": 3})
        steps[0].update(progress=1, status="finished", msg="done a")
        steps[1].update(progress=0.5)
    assert job.stats.lost == 0 and job.stats.sent >= 3
    node = amqp_service.wait_for(key, lambda n: n.get("status") == "finished" and len(n.get("tasks", [])) == 2,
                                 depth=2)
    assert node["progress"] == 1  # the job's own final progress, posted after its children's
    assert [(t["weight"], t["progress"]) for t in node["tasks"]] == [(1, 1), (3, 0.5)]
    assert node["tasks"][0]["msg"] == "done a"


async def test_amqp_async_reporter(amqp_service, amqp_url):
    key = new_key()
    r = AsyncReporter(key, amqp_url, exchange=amqp_service.names.exchange, rate=0)
    for i in range(1, 21):
        r.child(f"part{i:02d}").update(progress=i / 20)
    r.update(msg="twenty parts")
    await r.aclose()
    assert r.stats.lost == 0
    node = await asyncio.to_thread(amqp_service.wait_for, key, lambda n: len(n.get("tasks", [])) == 20, 2)
    assert node["msg"] == "twenty parts"
    assert node["progress"] == pytest.approx(sum(i / 20 for i in range(1, 21)) / 20)


def test_amqp_unroutable_or_unreachable_warns(amqp_service, amqp_url):
    r = Reporter(new_key(), amqp_url, exchange=f"missing-{uuid.uuid4().hex[:8]}", retries=0)
    r.update(progress=0.5)
    with pytest.warns(ReporterWarning, match="not-found|NOT_FOUND|not found"):
        r.close()
    # an exchange no queue is bound to: the broker returns the message
    r = Reporter(new_key(), amqp_url, exchange=amqp_service.names.events, retries=1, backoff=0.01)
    r.update(progress=0.5)
    with pytest.warns(ReporterWarning, match="unroutable"):
        r.close()
    r = Reporter(new_key(), f"amqp://guest:guest@127.0.0.1:{free_port()}/", retries=1, backoff=0.01)
    r.update(progress=0.5)
    with pytest.warns(ReporterWarning, match="after 2 attempts"):
        r.close()


# -- failures -------------------------------------------------------------------------------


def test_unreachable_service_warns_and_the_job_goes_on(service):
    url = dead_url()
    done = []
    with pytest.warns(ReporterWarning, match="cannot connect") as caught:
        with Reporter(new_key(), url, retries=2, backoff=0.01) as r:
            for i in range(3):
                r.update(progress=i / 3)
                done.append(i)
    assert done == [0, 1, 2]
    assert len(caught) == 1 and "after 3 attempts" in str(caught[0].message) and "lost" in str(caught[0].message)
    # tried 3 times (retries=2) while close() waited, then given up on
    assert r.stats.requests == r.stats.failures >= 3 and r.stats.lost >= 1

    r = Reporter(new_key(), url, retries=1, backoff=0.01, raise_errors=True)
    r.update(progress=0.5)
    with pytest.raises(ReporterError) as e:
        r.flush()
    assert e.value.code == "unreachable" and r.key in e.value.keys
    r.close()


async def test_unreachable_service_async(service):
    r = AsyncReporter(new_key(), dead_url(), retries=1, backoff=0.01, raise_errors=True)
    r.update(progress=0.5)
    with pytest.raises(ReporterError, match="cannot connect"):
        await r.flush()
    await r.aclose()


def readme_python_example() -> str:
    """The README's Python example, as it is written."""
    found = re.search(r"^<!-- example: python -->\n```python\n(.*?)^```$", README.read_text(),
                      re.DOTALL | re.MULTILINE)
    assert found, "README.md has no Python example"
    return found.group(1)


def test_the_readme_example_is_not_held_up_by_an_unreachable_service(service):
    """4 flush points (the ends of track(), two running() and the with) and the exit: with the
    service unreachable the example takes about a second longer, and warns once."""
    key = new_key()
    code = readme_python_example()
    assert code.count('"_portal.job123"') == 1
    code = code.replace('"_portal.job123"', repr(key))
    reachable, took_reachable = run_python(code, service.url)
    assert reachable.returncode == 0 and not reachable.stderr, reachable.stderr
    node = service.get(key, depth=2)
    assert (node["status"], node["progress"]) == ("finished", 1) and len(node["tasks"]) == 3

    unreachable, took_unreachable = run_python(code, dead_url())
    assert unreachable.returncode == 0, unreachable.stderr
    assert unreachable.stderr.count("ReporterWarning") == 1, unreachable.stderr
    assert "cannot connect" in unreachable.stderr
    assert took_unreachable < 6 and took_unreachable < took_reachable + 3, (took_unreachable, took_reachable)


def test_flush_points_wait_briefly_while_the_service_is_unreachable():
    """The defaults (retries=4, backoff=0.5 s: 7.5 s of retries): the first flush point waits
    flush_timeout (1 s), the later ones no more than one failed attempt; one warning."""
    r = Reporter(new_key(), dead_url())
    waits = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with r:
            for name in ("a", "b", "c"):
                step = r.child(name)
                started = time.monotonic()
                for _ in step.track(range(3)):  # a flush point at its end
                    step.update(msg=name)
                waits.append(time.monotonic() - started)
                started = time.monotonic()
                with step.running():  # and another
                    step.update(progress=0.5)
                waits.append(time.monotonic() - started)
            started = time.monotonic()
            r.flush()
            waits.append(time.monotonic() - started)
            pending = r.session.pending
            started = time.monotonic()
        waits.append(time.monotonic() - started)  # close()
    assert waits[0] < 1.6 and max(waits[1:]) < 0.5, waits
    assert pending == 4  # kept, merged: one state per node
    messages = reporter_warnings(caught)
    assert len(messages) == 1 and "cannot connect" in messages[0], messages
    assert "not sent yet (retrying in the background)" in messages[0]
    assert r.stats.lost == 4 and r.session.pending == 0  # close() gave up on them
    assert not r.session._thread.alive


def test_what_could_not_be_sent_is_retried_in_the_background(redis_url):
    """A flush with the service down leaves the state queued; later updates merge into it,
    and it reaches the service once that is up, with no further flush."""
    port = free_port()
    key = new_key()
    r = Reporter(key, f"http://127.0.0.1:{port}", backoff=0.1)
    r.update(progress=0.3, msg="while it was down")
    started = time.monotonic()
    with pytest.warns(ReporterWarning, match="cannot connect.*not sent yet"):
        r.flush()
    assert time.monotonic() - started < 1.6
    r.update(progress=0.6)
    assert r.session.pending == 1
    requests = r.stats.requests
    time.sleep(1)
    assert r.stats.requests > requests  # still trying, with nothing waiting for it
    back = Service(["--redis-url", redis_url, "--prefix", _prefix("back"), "--port", str(port)])
    try:
        node = back.wait_for(key, lambda n: n.get("progress") == 0.6, timeout=20)
        assert node["msg"] == "while it was down"
        # The service applies the update before its answer reaches the reporter.
        deadline = time.monotonic() + 5
        while r.session.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.session.pending == 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r.close()
        r.update(progress=0.7)
        r.flush()
    finally:
        back.stop()
    assert r.stats.lost == 0
    r.update(progress=0.8)  # a second outage: told again
    with pytest.warns(ReporterWarning, match="cannot connect.*lost"):
        r.close()
    assert r.stats.lost == 1


def test_raise_errors_gets_the_outage_once_and_at_once():
    r = Reporter(new_key(), dead_url(), raise_errors=True)
    r.update(progress=0.5)
    started = time.monotonic()
    with pytest.raises(ReporterError, match="cannot connect") as e:
        r.flush()
    assert time.monotonic() - started < 1.6
    assert e.value.code == "unreachable" and e.value.keys == (r.key,)
    r.update(progress=0.6)
    started = time.monotonic()
    r.flush()  # told already: no second error, and one failed attempt to wait for
    r.close()
    assert time.monotonic() - started < 0.5
    assert r.stats.lost == 1


async def test_async_flush_points_are_bounded_too():
    r = AsyncReporter(new_key(), dead_url())
    started = time.monotonic()
    with pytest.warns(ReporterWarning, match="cannot connect") as caught:
        async with r:
            async for _ in r.child("a").track(range(3)):
                pass
            async with r.child("b").running():
                pass
    assert time.monotonic() - started < 2
    assert len(caught) == 1 and r.stats.lost == 3


def test_the_exit_flush_is_bounded_when_the_service_is_unreachable():
    code = ("from sca_progress.client import Reporter\n"
            f"r = Reporter({new_key()!r})\n"
            "r.update(progress=0.9, msg='last words')  # never closed: the exit hook sends it\n")
    done, took = run_python(code, dead_url())
    assert done.returncode == 0, done.stderr
    assert took < 4, took
    assert done.stderr.count("ReporterWarning") == 1 and "lost" in done.stderr, done.stderr


@pytest.mark.parametrize("bad", ["notaurl", "ftp://x"])
def test_a_bad_url_in_the_environment_does_not_fail_the_job(bad, monkeypatch):
    monkeypatch.setenv("SCA_PROGRESS_URL", bad)
    expected = f"progress not reported: bad SCA_PROGRESS_URL {bad!r}: must be http(s):// or amqp(s)://; " \
               "this reporter drops its updates"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Reporter(new_key()) as job:
            for _ in job.child("a").track(range(3)):
                job.child("b").update(progress=0.5)
            with job.child("c").running():
                pass
            job.flush()
    assert reporter_warnings(caught) == [expected]
    assert caught[0].filename == __file__  # the job's line that made the reporter
    assert job.stats.updates > 0 and job.stats.lost == job.stats.updates and job.stats.requests == 0
    assert job.session._thread is None  # nothing to send: no thread either
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Reporter()  # the key would have come from the URL: a reporter all the same
        assert list(track(range(3), key=new_key())) == [0, 1, 2]
    assert reporter_warnings(caught) == [expected, expected]
    with pytest.raises(ReporterError) as e:
        Reporter(new_key(), raise_errors=True)
    assert e.value.code == "bad-url" and str(e.value) == f"bad SCA_PROGRESS_URL {bad!r}: must be http(s):// or amqp(s)://"


async def test_a_bad_url_argument_is_refused_the_same_way(service, monkeypatch):
    monkeypatch.setenv("SCA_PROGRESS_URL", service.url)  # a good one, not used instead
    key = new_key()
    with pytest.warns(ReporterWarning, match="bad url 'ftp://x': must be http"):
        r = AsyncReporter(key, "ftp://x")
    async with r:
        r.update(progress=0.5)
    assert r.stats.lost == r.stats.updates == 3 and r.stats.requests == 0
    with pytest.warns(ReporterWarning, match="bad url 'notaurl'"), Reporter(key, "notaurl") as job:
        job.update(progress=0.5)
    assert service.get(key) is None
    with pytest.raises(ReporterError) as e:
        Reporter(key, "http://h:port", raise_errors=True)
    assert e.value.code == "bad-url" and "bad port" in str(e.value)


def test_bad_input_warns_with_the_servers_code_and_is_not_retried(service):
    key = new_key()
    r = Reporter(key, service.url, rate=0)
    r.update(progress=7)
    r.child("fine").update(progress=0.5)
    with pytest.warns(ReporterWarning, match="bad-progress"):
        r.flush()
    assert r.stats.failures == 0 and r.stats.lost == 1  # a refused update is not retried
    assert service.get(f"{key}.fine")["progress"] == 0.5  # the rest of the batch applied
    r.update(_private=1)
    with pytest.warns(ReporterWarning, match="reserved-field"):
        r.close()

    strict = Reporter(key, service.url, raise_errors=True)
    strict.update(progress=-1)
    with pytest.raises(ReporterError) as e:
        strict.close()
    assert e.value.code == "bad-progress" and e.value.keys == (key,)


def test_refusals_of_the_whole_request(auth_service):
    key = new_key()
    with pytest.warns(ReporterWarning, match="forbidden"):
        with Reporter(key, auth_service.url, token=token("write:_client.someone-else")):
            pass
    r = Reporter(key, auth_service.url, token="not-a-token", retries=4)
    r.update(progress=0.5)
    with pytest.warns(ReporterWarning, match="401 unauthorized"):
        r.close()
    assert (r.stats.requests, r.stats.failures) == (1, 1)  # a 4xx is not retried
    assert auth_service.get(key, token=token(f"read:{key}")) is None


def test_rate_limited_requests_are_retried(auth_service):
    """The service allows this token 10 updates a second: batches of 8 sent back to
    back get 429, and are sent again after Retry-After."""
    key = new_key()
    r = Reporter(key, auth_service.url, token=token(f"write:{key}"), rate=0, retries=4, backoff=0.1)
    for round_ in range(3):
        for i in range(8):
            r.child(f"r{round_}-{i}").update(progress=1)
        r.flush()
    r.close()
    assert r.stats.failures >= 1 and r.stats.lost == 0
    node = auth_service.get(key, depth=2, token=token(f"read:{key}"))
    assert len(node["tasks"]) == 24 and node["progress"] == 1


def test_no_warning_when_all_is_well(service):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Reporter(new_key(), service.url) as r:
            r.update(progress=0.5)


def test_the_reporter_rides_out_a_service_restart(redis_url):
    """A restart closes the kept-alive connection, and the service is away for a while:
    the next update reconnects, retrying until it is back."""
    port, prefix = free_port(), _prefix("restart")
    args = ["--redis-url", redis_url, "--prefix", prefix, "--port", str(port)]
    first = Service(args)
    key = new_key()
    try:
        r = Reporter(key, first.url, rate=0, retries=8, backoff=0.2, flush_timeout=30)  # close() may wait for it
        r.update(progress=0.25)
        r.flush()
        first.stop()
        second = Service(args)  # the same port
        try:
            r.update(progress=0.5)  # over the old connection, which the server closed
            r.flush()
            assert r.stats.failures == 0 and r.session._transport.http.connections_opened == 2
            second.stop()
            r.update(progress=0.75, msg="while it was away")
            time.sleep(0.3)  # the sender is retrying meanwhile
            third = Service(args)
            try:
                r.close()  # no warning: the update got through
                assert third.get(key)["progress"] == 0.75 and third.get(key)["msg"] == "while it was away"
            finally:
                third.stop()
        finally:
            second.stop()
    finally:
        first.stop()
    assert r.stats.lost == 0 and r.stats.failures >= 1
    assert r.session._transport is None  # closed


def test_a_hung_service_times_out(redis_url):
    """A service that accepts connections but does not answer (stopped with SIGSTOP)."""
    import signal

    hung = Service(["--redis-url", redis_url, "--prefix", _prefix("hung")])
    key = new_key()
    try:
        hung.proc.send_signal(signal.SIGSTOP)
        r = Reporter(key, hung.url, timeout=0.3, retries=1, backoff=0.01)
        r.update(progress=0.5)
        started = time.monotonic()
        with pytest.warns(ReporterWarning, match="no answer within 0.3 s after 2 attempts"):
            r.close()
        assert time.monotonic() - started < 5
        slow = Reporter(key, hung.url, timeout=30)
        slow.update(progress=0.6)
        with pytest.warns(ReporterWarning, match="still unsent after 0.2 s"):
            slow.flush(timeout=0.2)
        strict = Reporter(key, hung.url, timeout=30, raise_errors=True)
        strict.update(progress=0.7)
        with pytest.raises(ReporterError) as e:
            strict.flush(timeout=0.2)
        assert e.value.code == "timeout"
        hung.proc.send_signal(signal.SIGCONT)
        slow.close()
        strict.close()
        assert hung.get(key)["progress"] == pytest.approx(0.7)
    finally:
        hung.proc.send_signal(signal.SIGCONT)
        hung.stop()


def test_unclosed_reporters_are_flushed_at_exit(service):
    key = new_key()
    code = ("import time\n"
            "from sca_progress.client import Reporter\n"
            f"r = Reporter({key!r}, {service.url!r}, rate=0.1)\n"
            "r.update(progress=0.1)\n"
            "time.sleep(0.2)\n"
            "r.update(progress=0.9, msg='last words')  # held back by the throttle, never closed\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    node = service.get(key)
    assert (node["progress"], node["msg"]) == (0.9, "last words")


def test_threads_share_one_reporter(service):
    from concurrent.futures import ThreadPoolExecutor

    key = new_key()
    with Reporter(key, service.url) as job:
        parts = job.children([f"part{i}" for i in range(8)])

        def work(part):
            for _ in part.track(range(50)):
                time.sleep(0.001)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, parts))
    node = service.get(key, depth=2)
    assert node["progress"] == 1 and node["_status_counts"] == {"finished": 8}
    assert [t["key"] for t in node["tasks"]] == [p.key for p in parts]  # announced order


def test_a_closed_reporter_starts_again(service):
    key = new_key()
    r = Reporter(key, service.url)
    r.update(progress=0.3)
    r.close()
    r.update(progress=0.6)
    r.close()
    assert service.get(key)["progress"] == pytest.approx(0.6)
    assert not r.session._thread.alive


# -- the commands ---------------------------------------------------------------------------


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sca_progress.server.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_post_and_get_commands(service):
    key = new_key()
    done = cli("post", key, "progress=0.5", "msg=Staging input", "weight=10", "meta={\"n\": 3}",
               "--url", service.url)
    assert done.returncode == 0, done.stderr
    env = {"SCA_PROGRESS_URL": f"{service.url}/status/{key}"}
    assert cli("post", "status=running", env=env).returncode == 0  # the key from the URL
    got = cli("get", key, "--depth", "2", "--json", "--url", service.url)
    assert got.returncode == 0, got.stderr
    node = json.loads(got.stdout)
    assert (node["progress"], node["msg"], node["weight"], node["meta"], node["status"]) == (
        0.5, "Staging input", 10, {"n": 3}, "running")
    # The flags, and a readable tree by default.
    flags = cli("post", f"{key}.step", "--progress", "0.25", "--msg", "flagged", "--status", "running",
                "--field", "files=6", "--url", service.url)
    assert flags.returncode == 0, flags.stderr
    step = service.get(f"{key}.step")
    assert (step["progress"], step["msg"], step["status"], step["files"]) == (0.25, "flagged", "running", 6)
    tree = cli("get", key, "--depth", "2", "--url", service.url, env={"COLUMNS": "120"})
    assert tree.returncode == 0, tree.stderr
    assert key in tree.stdout and "step" in tree.stdout and "25.0%" in tree.stdout and "flagged" in tree.stdout
    assert not tree.stdout.lstrip().startswith("{")
    assert cli("post", key, "--url", service.url).returncode != 0  # nothing to post
    refused = cli("post", key, "progress=7", "--url", service.url)
    assert refused.returncode == 1 and "bad-progress" in refused.stderr
    missing = cli("get", f"{key}.nothing", "--url", service.url)
    assert missing.returncode == 1 and "404" in missing.stderr
    down = cli("post", key, "progress=1", "--url", dead_url(), "--retries", "0")
    assert down.returncode == 2 and "cannot connect" in down.stderr


def test_post_command_over_amqp(amqp_service, amqp_url):
    key = new_key()
    done = cli("post", key, "progress=0.75", "msg=via AMQP", "--url", amqp_url,
               "--exchange", amqp_service.names.exchange)
    assert done.returncode == 0, done.stderr
    node = amqp_service.wait_for(key, lambda n: n.get("msg") == "via AMQP")
    assert node["progress"] == 0.75


@pytest.mark.parametrize("bad", ["notaurl", "ftp://x"])
def test_commands_refuse_a_bad_url_in_one_line(bad):
    for command, reason in (("post", "must be http(s):// or amqp(s)://"), ("get", "must be http(s)://")):
        fields = ["progress=1"] if command == "post" else []
        done = cli(command, "_client.k", *fields, "--url", bad)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"sca-progress {command}: bad --url {bad!r}: {reason}"]
        done = cli(command, "_client.k", *fields, env={"SCA_PROGRESS_URL": bad})
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"sca-progress {command}: bad SCA_PROGRESS_URL {bad!r}: {reason}"]


def test_post_to_an_unreachable_broker_says_so_in_one_line():
    done = cli("post", new_key(), "progress=1", "--url", f"amqp://guest:guest@127.0.0.1:{free_port()}/",
               "--retries", "1")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sca-progress post: AMQP exchange 'progress': "), done.stderr
    assert "after 2 attempts" in lines[0] and "aiormq" not in done.stderr


def test_only_the_commands_quiet_the_amqp_libraries(caplog):
    """Inside `post`, aiormq's own error lines are silenced; a job's Reporter still gets them."""
    parser = argparse.ArgumentParser()
    commands.add_post(parser.add_subparsers())
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    args = parser.parse_args(["post", new_key(), "progress=1", "--url", url, "--retries", "0"])
    with caplog.at_level(logging.WARNING):
        assert args.func(args) == 2
        assert not [r for r in caplog.records if r.name.startswith(("aiormq", "aio_pika"))]
        assert logging.getLogger("aiormq").level == logging.NOTSET  # as it was
        r = Reporter(new_key(), url, retries=0)
        r.update(progress=1)
        with pytest.warns(ReporterWarning):
            r.close()
        assert [r for r in caplog.records if r.name.startswith("aiormq")]


def test_the_commands_import_neither_the_server_nor_what_one_command_needs():
    code = ("import sys, sca_progress.client.commands, sca_progress.client.watch\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rich', 'aio_pika', 'aiormq', 'asyncio', 'tornado', 'redis') "
            "or m.startswith(('sca_progress.server', 'sca_progress.engine')))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
