"""socket.io-client from npm, installed once into tests/js (ignored by git)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"
VERSION = "4.8.1"


def node_client_dir() -> Path:
    if (JS / "node_modules" / "socket.io-client" / "package.json").exists():
        return JS
    JS.mkdir(exist_ok=True)
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(JS),
                           f"socket.io-client@{VERSION}"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"npm could not install socket.io-client: {done.stderr[-500:]}")
    return JS
