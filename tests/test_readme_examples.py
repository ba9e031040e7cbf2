"""The README's examples, run as they are written against a real service.

Each example is the code block that follows a `<!-- example: NAME -->`
comment in README.md.  The only change made to one before it runs is the
service's address: the curl blocks name http://127.0.0.1:8080, which
becomes the test service's URL; the Python and Node ones read
SCA_PROGRESS_URL.  Every test starts its own service under a key prefix of
its own, so the examples' keys (the same `_portal.job123` in several) never
meet.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import RUN_PREFIX
from .procs import start_service, stop_service

README = Path(__file__).resolve().parent.parent / "README.md"

#: The address the README's curl examples are written for.
README_URL = "http://127.0.0.1:8080"


def example(name: str) -> str:
    """The code of the block right after `<!-- example: NAME -->` in the README."""
    text = README.read_text()
    found = re.search(rf"^<!-- example: {re.escape(name)} -->\n```[\w-]*\n(.*?)^```$", text,
                      re.DOTALL | re.MULTILINE)
    assert found, f"README.md has no code block marked <!-- example: {name} -->"
    return found.group(1)


def get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=30) as answer:
        return json.loads(answer.read())


def json_values(text: str) -> list:
    """The JSON documents written one after another (as curl prints answers)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return out
        value, at = decoder.raw_decode(text, at)
        out.append(value)


def by_name(node: dict) -> dict:
    """A node's loaded children by the last segment of their keys."""
    return {task["key"].rsplit(".", 1)[1]: task for task in node["tasks"]}


@pytest.fixture
def service(redis_url):
    """A service of this test's own: its base URL."""
    proc, url, _ = start_service(["--redis-url", redis_url,
                                    "--prefix", f"{RUN_PREFIX}-readme-{uuid.uuid4().hex[:8]}"])
    try:
        yield url
    finally:
        stop_service(proc)


def test_every_marked_example_is_found():
    for name in ("curl", "curl-spec", "python", "node"):
        assert example(name).strip()
    assert "fetch(" in example("node") and "require(" not in example("node"), "the Node example needs no package"


def test_the_python_reporter_example(service, tmp_path):
    code = example("python")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False,
                          env={**os.environ, "SCA_PROGRESS_URL": service, "SCA_PROGRESS_TOKEN": ""})
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "progress not reported" not in done.stderr, done.stderr  # a ReporterWarning
    assert took < 10, f"the README's Python example took {took:.1f} s"

    job = get(service, "/status/_portal.job123?depth=2")
    assert job["status"] == "finished" and job["progress"] == 1 and "end_time" in job
    steps = ["stage_input", "qrprocess", "output_transfer"]
    assert job["_children"] == [f"_portal.job123.{s}" for s in steps]  # announced in this order
    assert job["_status_counts"] == {"finished": 3}
    tasks = by_name(job)
    assert {s: tasks[s]["weight"] for s in steps} == {"stage_input": 10, "qrprocess": 100, "output_transfer": 2}
    for s in steps:
        assert tasks[s]["status"] == "finished" and tasks[s]["progress"] == 1, tasks[s]
        assert "run_time" in tasks[s] and "end_time" in tasks[s]
    assert tasks["stage_input"]["msg"] == "Staging input"
    assert tasks["qrprocess"]["msg"] == "Running QR process" and tasks["qrprocess"]["chunk"] == 9
    assert tasks["output_transfer"]["msg"] == "Transferring output"
    # The steps ran one after another, as the example runs them.
    assert tasks["stage_input"]["end_time"] <= tasks["qrprocess"]["run_time"]
    assert tasks["qrprocess"]["end_time"] <= tasks["output_transfer"]["run_time"]


def node_20() -> str | None:
    """Why the Node example cannot run here, or None."""
    if not shutil.which("node"):
        return "Node.js is not installed"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout.strip()
    major = re.match(r"v(\d+)", version)
    if not major or int(major.group(1)) < 20:
        return f"the README's Node example is for Node 20 or later, not {version or 'this node'}"
    return None


def run_node(code: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "example.js"
    script.write_text(code)
    return subprocess.run(["node", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "SCA_PROGRESS_URL": url, "SCA_PROGRESS_TOKEN": ""})


def test_the_node_example(service, tmp_path):
    why = node_20()
    if why:
        pytest.skip(why)
    done = run_node(example("node"), service, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "_sca.123.prep: running, 80 %"

    node = get(service, "/status/_sca.123.prep")
    assert node["status"] == "running" and node["progress"] == 0.8
    assert node["name"] == "Important Work" and node["msg"] == "doing something important"
    assert get(service, "/status/_sca.123")["progress"] == 0.8  # rolled up into its parent


def test_the_node_example_exits_non_zero_when_refused(service, tmp_path):
    """Its error path: a refused POST ends the script with status 1 and the answer on stderr."""
    why = node_20()
    if why:
        pytest.skip(why)
    done = run_node(example("node"), service + "/elsewhere", tmp_path)
    assert done.returncode == 1
    assert "POST " in done.stderr and "404" in done.stderr


def run_curl(code: str, service: str) -> list:
    """Run a curl example against *service*; every answer it printed, parsed."""
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    assert README_URL in code
    script = code.replace(README_URL, service)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    answers = json_values(done.stdout)
    refused = [a for a in answers if "error" in a]
    assert refused == [], refused
    return answers


def test_the_curl_examples(service):
    answers = run_curl(example("curl"), service)
    assert len(answers) == 6  # five POSTs and the read
    batch = answers[4]
    assert [r["ok"] and r["applied"] for r in batch["results"]] == [True, True]

    job = answers[-1]  # the example's last command reads the tree two levels deep
    assert job == {**get(service, "/status/_portal.job123?depth=2"), "_now": job["_now"]}
    tasks = by_name(job)
    assert {s: (t["weight"], t["msg"]) for s, t in tasks.items()} == {
        "stage_input": (10, "Staging input"), "qrprocess": (100, "Running QR process"),
        "output_transfer": (2, "Transferring output")}
    stage = tasks["stage_input"]
    assert stage["_children"] == ["_portal.job123.stage_input.abc", "_portal.job123.stage_input.def"]
    assert stage["_status_counts"] == {"running": 1, "waiting": 1}
    assert stage["progress"] == pytest.approx((0.5 + 0) / 2)  # abc at 0.5, def announced at 0
    assert job["progress"] == pytest.approx(10 * 0.25 / (10 + 100 + 2))
    abc = get(service, "/status/_portal.job123.stage_input.abc")
    assert abc["progress"] == 0.5 and abc["msg"] == "Thawing file ABC" and abc["status"] == "running"


def test_the_curl_example_in_the_specs_style(service):
    """SCA_PROGRESS_URL ending in /status/<key>: post to it, read it back."""
    posted, read = run_curl(example("curl-spec"), service)
    assert read == {**get(service, "/status/_portal.job123.stage_input"), "_now": read["_now"]}
    assert read["key"] == "_portal.job123.stage_input"
    assert (read["status"], read["progress"], read["msg"]) == ("waiting", 0, "Downloading data")
    assert posted["_applied"] is True
