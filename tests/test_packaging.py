"""`pip install .` and `pip install -e .` in fresh virtual environments.

The installed package must live under one import namespace (no bare
`engine` or `server` in site-packages) and find its Lua files and the UI's
static files.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.util, sys
from sca_progress.engine.scripts import Scripts
from sca_progress.engine import embedded
s = Scripts()
assert all(src.startswith("--[[") for src in s.source.values()), "lua sources"
from sca_progress.server.ui import STATIC_DIR
assert (STATIC_DIR / "index.html").is_file() and (STATIC_DIR / "main.js").is_file(), "the UI's static files"
for bare in ("engine", "server", "lua"):
    assert importlib.util.find_spec(bare) is None, bare + " leaked into site-packages"
print("ok", sorted(s.sha))
"""


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_install_in_a_fresh_venv(tmp_path, editable):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    target = ["-e", str(ROOT)] if editable else [str(ROOT)]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *target], check=True, cwd=tmp_path, timeout=600)
    out = subprocess.run([str(py), "-c", CHECK], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.startswith("ok")
    helped = subprocess.run([str(venv / "bin" / "sca-progress"), "serve", "--help"], check=True,
                            capture_output=True, text=True, cwd=tmp_path)
    assert "--redis-url" in helped.stdout
