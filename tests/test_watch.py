"""`sca-progress watch`: a real service, real Redis, the watcher on a real pseudo-terminal.

The watcher runs as ``python -m sca_progress.client.watch`` with a pty of its
own as its controlling terminal (size fixed with TIOCSWINSZ), so a ^C written
to the pty reaches it as SIGINT, exactly as from a keyboard.  What it draws is
read back from the pty; the tmux test reads tmux's screen instead, to check
that the view is redrawn in place rather than scrolled.
"""
from __future__ import annotations

import fcntl
import io
import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.request
import uuid

import jwt
import orjson
import pytest
from rich.console import Console

from sca_progress.client.tree_view import BAR_WIDTH, human_duration, render_tree
from sca_progress.client.watch import parse_url

from .conftest import RUN_PREFIX
from .procs import free_port, start_service, stop_service

SECRET = "a-long-test-secret-for-the-watch-tests!!"

#: Run in the child: take the pty on stdin as the controlling terminal of the
#: new session, then become `python -m sca_progress.client.watch ARGS`.
ATTACH = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
          "os.execv(sys.executable, [sys.executable, '-m', 'sca_progress.client.watch', *sys.argv[1:]])")

#: CSI and OSC sequences, and charset selections: what is left is the text drawn.
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]")

#: Variables that would change how rich or the watcher behave.
SCRUBBED = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
            "SCA_PROGRESS_URL", "SCA_PROGRESS_TOKEN", "TMUX", "TMUX_PANE")


def terminal_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


class Terminal:
    """The watcher on a pseudo-terminal of ROWS x COLS; everything it writes is kept."""

    def __init__(self, args: list[str], rows: int = 30, cols: int = 120) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.raw = bytearray()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.proc = subprocess.Popen([sys.executable, "-c", ATTACH, *args], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True,
                                     env=terminal_env(), close_fds=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.raw += chunk

    def mark(self) -> int:
        """Where the output is now: text(since=mark) is what was drawn after it."""
        with self._lock:
            return len(self.raw)

    def output(self) -> bytes:
        with self._lock:
            return bytes(self.raw)

    def text(self, since: int = 0) -> str:
        return ANSI.sub(b"", self.output()[since:]).decode("utf-8", "replace")

    def wait_for(self, *needles: str, since: int = 0, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text(since)
            if all(n in text for n in needles):
                return text
            if time.monotonic() > deadline or self.proc.poll() is not None:
                missing = [n for n in needles if n not in text]
                pytest.fail(f"the screen never showed {missing} (exit code {self.proc.poll()}); "
                            f"it showed:\n{text[-3000:]}")
            time.sleep(0.05)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")  # the line discipline turns it into SIGINT

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # let the reader take the last bytes
        return code

    def echo_on(self) -> bool:
        return bool(termios.tcgetattr(self.slave)[3] & termios.ECHO)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._done.set()
        self._reader.join(5)
        os.close(self.master)
        os.close(self.slave)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def call(method: str, url: str, body=None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read() or b"null")


def post(base: str, key: str, body: dict, token: str | None = None) -> dict:
    status, answer = call("POST", f"{base}/status/{key}", body, token)
    assert status == 200, answer
    return answer


def new_job() -> str:
    return f"_watch.job{uuid.uuid4().hex[:8]}"


def service_args(redis_url: str, prefix: str, *more: str) -> list[str]:
    return ["--redis-url", redis_url, "--prefix", prefix, "--feed-tick", "0.05", *more]


@pytest.fixture(scope="module")
def service(redis_url):
    proc, base, _ = start_service(service_args(redis_url, f"{RUN_PREFIX}-watch-{uuid.uuid4().hex[:8]}"))
    yield base
    stop_service(proc)


def assert_clean_exit(term: Terminal) -> None:
    """Exit code 0, no traceback, the cursor shown again and the echo restored."""
    assert term.wait() == 0, term.text()[-3000:]
    text = term.text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    raw = term.output()
    hidden = raw.rfind(b"\x1b[?25l")
    assert hidden != -1, "the live view hides the cursor while it draws"
    assert raw.rfind(b"\x1b[?25h") > hidden, "the cursor was not shown again"
    assert term.echo_on(), "the terminal's echo was not restored"


# -- the live view on a pseudo-terminal --------------------------------------------------------


def test_watch_draws_the_tree_follows_changes_and_exits_on_ctrl_c(service):
    job = new_job()
    post(service, f"{job}.stage", {"progress": 0.25, "msg": "staging files", "status": "running"})
    post(service, f"{job}.upload", {"progress": 0, "status": "waiting", "weight": 2})
    post(service, f"{job}.report.pdf", {"progress": 1, "status": "finished"})
    with Terminal([job, "--url", service, "--interval", "0.1"]) as term:
        # root: (0.25·1 + 0·2 + 1·1) / 4 = 31.25 %
        text = term.wait_for(job, "stage", "upload", "report", "25.0%", "31.2%", "staging files",
                             "running", "waiting", "[1 finished]", f"{service}  live")
        assert "pdf" not in text  # --depth 2: the report's child is counted, not drawn
        assert "75.0%" not in text and "uploading soon" not in text
        assert not term.echo_on(), "keys typed must not echo into the view"

        mark = term.mark()
        post(service, f"{job}.stage", {"progress": 0.75, "msg": "uploading soon"})
        # root: (0.75 + 0 + 1) / 4 = 43.75 %
        term.wait_for("75.0%", "uploading soon", "43.7%", since=mark, timeout=10)
        assert "reconnecting" not in term.text()

        term.ctrl_c()
        assert_clean_exit(term)


def test_watch_waits_for_a_key_that_does_not_exist_yet(service):
    job = new_job()
    with Terminal(["--url", f"{service}/status/{job}"]) as term:  # the key from the URL
        text = term.wait_for(f"waiting for {job}…", f"{service}  live")
        assert "%" not in text  # no tree drawn yet

        mark = term.mark()
        post(service, f"{job}.first", {"progress": 0.5, "msg": "it started", "status": "running"})
        term.wait_for("first", "50.0%", "it started", "[1 running]", since=mark, timeout=10)

        mark = term.mark()
        status, _ = call("DELETE", f"{service}/status/{job}")
        assert status == 204
        text = term.wait_for(f"waiting for {job}…", since=mark, timeout=10)
        assert "it started" not in text.rsplit(f"waiting for {job}…", 1)[1]

        term.ctrl_c()
        assert_clean_exit(term)


def test_watch_reconnects_after_the_service_restarts(redis_url):
    port = str(free_port())
    args = service_args(redis_url, f"{RUN_PREFIX}-watch-{uuid.uuid4().hex[:8]}", "--port", port)
    proc, base, _ = start_service(args)
    job = new_job()
    try:
        post(base, f"{job}.stage.part1", {"progress": 0.2, "msg": "part one"})
        with Terminal([job, "--url", base, "--depth", "3"]) as term:
            term.wait_for("part1", "part one", "20.0%", f"{base}  live")  # --depth 3 draws the grandchild

            mark = term.mark()
            stop_service(proc)
            term.wait_for("reconnecting…", since=mark, timeout=15)

            proc, again, _ = start_service(args)
            assert again == base
            mark = term.mark()
            post(base, f"{job}.stage.part1", {"progress": 0.9, "msg": "part one nearly done"})
            text = term.wait_for("90.0%", "part one nearly done", f"{base}  live", since=mark, timeout=30)
            assert text.rfind(f"{base}  live") > text.rfind("reconnecting…")

            term.ctrl_c()
            assert_clean_exit(term)
    finally:
        stop_service(proc)


def token(scope: str) -> str:
    return jwt.encode({"sub": "watch-test", "exp": int(time.time()) + 300, "scope": scope}, SECRET,
                      algorithm="HS256")


def test_watch_with_tokens(redis_url):
    proc, base, _ = start_service(service_args(redis_url, f"{RUN_PREFIX}-watch-{uuid.uuid4().hex[:8]}",
                                               "--jwt-secret", SECRET))
    job = new_job()
    try:
        post(base, f"{job}.step", {"progress": 0.4, "msg": "secured step"}, token=token(f"write:{job}"))
        for tok, status in ((None, "401"), (token("read:_elsewhere"), "403")):
            with Terminal([job, "--url", base] + (["--token", tok] if tok else [])) as term:
                assert term.wait() == 2, term.text()
                text = term.text()
                assert "Traceback" not in text, text
                errors = [line for line in text.splitlines() if "sca-progress watch:" in line]
                assert len(errors) == 1 and status in errors[0], text
                assert "secured step" not in text

        with Terminal([job, "--url", base, "--token", token(f"read:{job}")]) as term:
            term.wait_for("step", "40.0%", "secured step", f"{base}  live")
            mark = term.mark()
            post(base, f"{job}.step", {"progress": 0.6}, token=token(f"write:{job}"))
            term.wait_for("60.0%", since=mark, timeout=10)
            term.ctrl_c()
            assert_clean_exit(term)
    finally:
        stop_service(proc)


def test_watch_redraws_in_place(service, tmp_path):
    """On tmux's screen (a real terminal emulator), many changes later the view
    is still one header and one tree: redrawn in place, never scrolled."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    job = new_job()
    post(service, f"{job}.a", {"progress": 0.1, "msg": "step a"})
    post(service, f"{job}.b", {"progress": 0.1, "msg": "step b"})
    sock = str(tmp_path / "tmux.sock")
    rc_file = tmp_path / "rc"
    env = terminal_env()
    watch = shlex.join([sys.executable, "-m", "sca_progress.client.watch", job, "--url", service,
                        "--interval", "0.05"])
    command = f"{watch}; echo $? > {shlex.quote(str(rc_file))}; sleep 60"
    tmux = ["tmux", "-S", sock, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "20", command], env=env, check=True)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"], env=env, check=True,
                                  capture_output=True, text=True).stdout

        def wait_screen(*needles: str) -> str:
            deadline = time.monotonic() + 20
            while True:
                shown = screen()
                if all(n in shown for n in needles):
                    return shown
                if time.monotonic() > deadline:
                    pytest.fail(f"tmux never showed {needles}; it showed:\n{shown}")
                time.sleep(0.05)

        wait_screen("step a", "10.0%", f"{service}  live")
        for i in range(1, 10):
            post(service, f"{job}.a", {"progress": i / 10, "msg": f"step a, round {i}"})
            time.sleep(0.1)
        shown = wait_screen("90.0%", "step a, round 9")
        assert shown.count("watching ") == 1, shown
        assert sum(1 for line in shown.splitlines() if line.startswith(job)) == 1, shown
        assert "round 8" not in shown, shown

        subprocess.run([*tmux, "send-keys", "C-c"], env=env, check=True)
        deadline = time.monotonic() + 20
        while not (rc_file.exists() and rc_file.read_text().strip()):
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)
        assert rc_file.read_text().strip() == "0"
        shown = screen()
        assert "Traceback" not in shown and "^C" not in shown, shown
        assert shown.count("watching ") == 1, shown  # ^C did not push the view down a line
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True, check=False)


# -- the renderer and the URL forms, on their own ----------------------------------------------

NOW = 1_800_000_000_000


def sample_tree() -> dict:
    return {
        "key": "_portal.job123", "progress": 0.4166, "msg": "Staging input", "run_time": NOW - 62_000,
        "eta": NOW + 125_000, "_status_counts": {"running": 1, "finished": 1, "failed": 1},
        "_children": ["_portal.job123.stage_input", "_portal.job123.qrprocess", "_portal.job123.broken"],
        "_children_total": 10,
        "tasks": [
            {"key": "_portal.job123.stage_input", "progress": 1, "status": "finished", "msg": "staged",
             "run_time": NOW - 60_000, "end_time": NOW - 51_000},
            {"key": "_portal.job123.qrprocess", "progress": 0.16, "status": "running",
             "msg": "Running QR process", "run_time": NOW - 3_723_000, "eta": NOW + 90_061_000,
             "_status_counts": {"running": 8, "none": 2}, "_children": ["_portal.job123.qrprocess.p1"],
             "_children_total": 10},
            {"key": "_portal.job123.broken", "progress": 0.5, "status": "failed", "msg": "disk full"},
        ],
    }


def rendered(node: dict, **options) -> list[str]:
    console = Console(record=True, width=120, color_system=None, file=io.StringIO())
    console.print(render_tree(node, **options))
    return console.export_text().splitlines()


def row(lines: list[str], needle: str) -> str:
    found = [line for line in lines if needle in line]
    assert len(found) == 1, lines
    return found[0]


def test_render_tree_shows_each_node_with_bar_percent_status_times_and_counts():
    lines = rendered(sample_tree(), now_ms=NOW)
    assert all(len(line) <= 120 for line in lines)
    assert lines[0].split() == ["node", "progress", "%", "status", "eta", "elapsed", "children", "·", "msg"]

    root = row(lines, "_portal.job123 ")
    assert root.startswith("_portal.job123 ")  # the root by its full key
    for part in ("41.6%", "~2m 05s", "1m 02s", "[1 running · 1 finished · 1 failed]", "Staging input"):
        assert part in root, root

    done = row(lines, "stage_input")
    assert done.startswith("├── stage_input")  # the others by their last segment
    for part in ("━" * BAR_WIDTH, "100.0%", "finished", "took 9s", "staged"):
        assert part in done, done

    busy = row(lines, "qrprocess")
    assert busy.startswith("├── qrprocess")
    for part in ("16.0%", "running", "~1d 01h", "1h 02m", "[8 running · 2 none]", "Running QR process"):
        assert part in busy, busy
    assert "━" * BAR_WIDTH not in busy

    failed = row(lines, "broken")
    for part in ("50.0%", "failed", "disk full"):
        assert part in failed, failed
    assert "~" not in failed  # no eta, no run time: nothing in those columns

    assert row(lines, "more").startswith("└── … 7 more")  # 10 children, 3 loaded
    assert len(lines) == 6


def test_render_tree_clock_and_children_limit():
    node = sample_tree()
    lines = rendered(node, now_ms=NOW + 60_000, max_children=1)
    root = row(lines, "_portal.job123 ")
    assert "~1m 05s" in root and "2m 02s" in root  # a minute later, on the given clock
    assert "qrprocess" not in "\n".join(lines)
    assert row(lines, "more").startswith("└── … 9 more")

    node["_now"] = NOW  # without now_ms, the payload's own server time
    assert "~2m 05s" in row(rendered(node), "_portal.job123 ")

    leaf = {"key": "_a.b.c", "msg": "no progress yet"}
    (line,) = rendered(leaf)[1:]
    assert line.startswith("_a.b.c") and "no progress yet" in line and "%" not in line


def test_human_durations():
    assert [human_duration(ms) for ms in (0, 999, 59_999, 60_000, 3_599_000, 3_600_000, 90_000_000)] == \
        ["0s", "0s", "59s", "1m 00s", "59m 59s", "1h 00m", "1d 01h"]
    assert human_duration(500, round_up=True) == "1s"
    assert human_duration(-5_000) == "0s"


@pytest.mark.parametrize("url, base, key", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080", None),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080", None),
    ("http://127.0.0.1:8080/status", "http://127.0.0.1:8080", None),
    ("http://127.0.0.1:8080/status/_portal.job1?depth=3", "http://127.0.0.1:8080", "_portal.job1"),
    ("https://progress.example/api/status/_portal.job1/", "https://progress.example/api", "_portal.job1"),
    ("http://h:81/ui/_portal.job%3A1", "http://h:81", "_portal.job:1"),
    ("HTTPS://h:444/status", "https://h:444", None),
])
def test_parse_url(url, base, key):
    endpoint, found = parse_url(url)
    assert (endpoint.base, found) == (base, key)


def watch_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The watcher without a terminal, for what it does before it draws anything."""
    return subprocess.run([sys.executable, "-m", "sca_progress.client.watch", *args], capture_output=True,
                          text=True, timeout=20, env={**terminal_env(), **(env or {})}, check=False)


@pytest.mark.parametrize("bad, reason", [
    ("notaurl", "must be http(s)://"),           # not a host name to keep trying
    ("localhost:9000", "must be http(s)://"),
    ("ftp://x", "must be http(s)://"),
    ("http://h:port", "bad port"),
    ("http:///status/_a.b", "no host"),
])
def test_watch_refuses_a_bad_url_at_once(bad, reason):
    done = watch_command("_watch.k", "--url", bad)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sca-progress watch: bad --url {bad!r}: {reason}"]
    done = watch_command("_watch.k", env={"SCA_PROGRESS_URL": bad})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sca-progress watch: bad SCA_PROGRESS_URL {bad!r}: {reason}"]


def test_watch_takes_a_url_ending_in_status_with_the_key_as_argument(service):
    job = new_job()
    post(service, f"{job}.step", {"progress": 0.5, "msg": "half way"})
    with Terminal([job, "--url", f"{service}/status"]) as term:
        term.wait_for("step", "50.0%", "half way", f"{service}  live")
        term.ctrl_c()
        assert_clean_exit(term)
    done = watch_command("--url", f"{service}/status")  # and no KEY: nothing to watch
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["sca-progress watch: no KEY given (as an argument or in --url …/status/KEY)"]
    # What --help says of it is what it does.
    shown = " ".join(watch_command("--help").stdout.split())
    assert "ending in /status (then give KEY), or ending in /status/KEY, which names the key" in shown, shown
    assert "needed unless the URL ends in /status/KEY" in shown, shown
