"""`sca-progress demo` and `serve --demo`: the simulated job reaches the service and finishes."""
from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest

from sca_progress.server.demo import DemoError, run_demo

from .procs import start_service, stop_service


async def test_the_demo_job_runs_to_the_end(server, http):
    base, _ = server
    job = await run_demo(base, speed=200, seed=7, job="_demo.job1", files=4, parts=10)
    assert job == "_demo.job1"
    status, tree, _ = await http("GET", f"{base}/status/{job}?depth=3")
    assert status == 200 and tree["progress"] == 1 and tree["status"] == "finished"
    steps = {t["key"].rsplit(".", 1)[1]: t for t in tree["tasks"]}
    assert list(steps) == ["stage_input", "processing", "output_transfer"]     # announced in order
    assert [steps[s].get("weight", 1) for s in steps] == [10, 100, 2]
    assert all(s["status"] == "finished" for s in steps.values())
    assert steps["stage_input"]["_status_counts"] == {"finished": 4}
    parts = steps["processing"]["tasks"]
    assert len(parts) == 10 and all(p["status"] == "finished" and p["progress"] == 1 for p in parts)
    retried = [p for p in parts if p["attempt"] > 1]                          # they failed once
    assert len(retried) >= 2 and all(p["attempt"] == 2 for p in retried)
    assert "tasks" not in steps["output_transfer"] and steps["output_transfer"]["progress"] == 1


async def test_the_demo_command_against_a_running_service(server, http):
    base, _ = server
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sca_progress.server.cli", "demo", "--url", base, "--speed", "200",
        "--seed", "1", "--job", "_demo.cli", stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert f"{base}/ui/_demo.cli" in err.decode()                             # where to watch it
    status, tree, _ = await http("GET", f"{base}/status/_demo.cli")
    assert status == 200 and tree["status"] == "finished"


async def test_the_demo_says_when_the_service_is_unreachable():
    with pytest.raises(DemoError, match=r"POST http://127\.0\.0\.1:9/status: .*refused"):
        await run_demo("http://127.0.0.1:9", speed=100)


def test_serve_with_demo_runs_the_job_in_process(redis_url, prefix):
    proc, base, log = start_service(["--redis-url", redis_url, "--prefix", prefix, "--demo"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/status/_portal?depth=2", timeout=10) as response:
                    jobs = orjson.loads(response.read()).get("tasks", [])
            except urllib.error.HTTPError:                              # 404 until the first post
                jobs = []
            if any(j["key"].startswith("_portal.demo-") and j.get("progress", 0) > 0 for j in jobs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("no demo job made progress:\n" + log())
        assert "demo: job _portal.demo-" in log()
    finally:
        assert stop_service(proc) == 0
