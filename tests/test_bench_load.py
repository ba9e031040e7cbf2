"""The load-test harness runs end to end at a small size, and its own
correctness check finds every node the jobs sent, right."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_small_load_run_checks_out(amqp_url, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--jobs", "30", "--rate", "300", "--seconds", "8",
         "--readers", "1", "--subscribers", "3", "--amqp-url", amqp_url, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = list(tmp_path.iterdir())
    report = json.loads((run / "report.json").read_text())
    check = report["summary"]["check"]
    assert check["checked"] > 100 and check["lost"] == 0 and check["wrong"] == 0
    assert report["summary"]["updates_applied"] == report["sent"] > 0
    assert {"throughput.png", "backlog.png", "reads.png", "subscribers.png", "report.md"} <= {
        p.name for p in run.iterdir()}


def test_refuses_anything_but_loopback():
    done = subprocess.run([sys.executable, "-m", "bench.load", "--url", "http://example.com:8080"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "loopback only" in done.stderr
