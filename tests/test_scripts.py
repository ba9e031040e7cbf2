"""The Lua loader: includes inlined once, nested, cycles refused; every script renders."""
import re

import pytest

from sca_progress.engine.scripts import SCRIPT_NAMES, Scripts, library, render


def fake(files):
    def read(path):
        return files[path]
    return read


def test_includes_are_inlined_once_and_nested():
    files = {
        "main.lua": "--@include a\n--@include b\nreturn 1\n",
        "include/a.lua": "--@include c\nlocal function a() end\n",
        "include/b.lua": "--@include c\nlocal function b() end\n",
        "include/c.lua": "local function c() end\n",
    }
    src = render("main", fake(files))
    assert src.count("local function c()") == 1
    assert src.index("local function c()") < src.index("local function a()") < src.index("local function b()")
    assert "@include" not in src.replace("(c included above)", "")


def test_include_cycle_is_refused():
    files = {"main.lua": "--@include a\n", "include/a.lua": "--@include b\n", "include/b.lua": "--@include a\n"}
    with pytest.raises(ValueError, match="cycle"):
        render("main", fake(files))


def test_missing_include_fails_loudly():
    with pytest.raises(KeyError):
        render("main", fake({"main.lua": "--@include nope\n"}))


def test_every_script_renders_with_all_includes_resolved():
    scripts = Scripts()
    assert set(scripts.source) == set(SCRIPT_NAMES)
    for name, src in scripts.source.items():
        assert not re.search(r"^--@include", src, re.MULTILINE), name
        assert src.lstrip().startswith("--[["), f"{name}.lua must open with its header block"
        # Each include's function is defined once at most.
        defined = re.findall(r"^local function (\w+)", src, re.MULTILINE)
        assert len(defined) == len(set(defined)), name


def test_the_library_holds_each_include_once_and_every_script():
    files = {
        "one.lua": "local a = 1\n--@include x\nreturn x()\n",
        "two.lua": "--@include y\nreturn y()\n",
        "include/x.lua": "local function x() return 1 end\n",
        "include/y.lua": "--@include x\nlocal function y() return x() end\n",
    }
    name, src = library(("one", "two"), fake(files))
    assert src.startswith(f"#!lua name={name}\n") and src.count("local function x()") == 1
    assert src.index("local function x()") < src.index("local function y()") < src.index("register_function")
    assert f"function_name = '{name}_one'" in src and f"function_name = '{name}_two'" in src
    assert library(("one", "two"), fake(files))[0] == name  # named after its source
    files["include/x.lua"] = "local function x() return 2 end\n"
    assert library(("one", "two"), fake(files))[0] != name


async def test_the_shipped_library_loads(redis_client):
    info = await redis_client.info("server")
    if int(str(info["redis_version"]).split(".")[0]) < 7:
        pytest.skip("Redis before 7 has no functions: the scripts run by SHA")
    name, src = library()
    assert (await redis_client.execute_command("FUNCTION", "LOAD", "REPLACE", src)).decode() == name


async def test_scripts_reload_after_script_flush(engine, redis_client):
    await engine.apply([("_t.j.a", {"progress": 0.5})])
    await redis_client.script_flush()
    if engine.scripts.functions:
        await redis_client.execute_command("FUNCTION", "DELETE", engine.scripts.library_name)
    result = await engine.apply([("_t.j.b", {"progress": 1})])
    assert result.results == ["applied"]
    assert (await engine.read("_t.j"))["progress"] == 0.75


async def test_bench_phases_instruments_the_shipped_script(redis_client):
    """bench.phases finds every marker in apply_updates.lua, and its copy still compiles."""
    from bench.phases import PHASES, instrumented

    source = instrumented(render("apply_updates"))
    assert all(f"phase('{p}')" in source for p in PHASES)
    await redis_client.script_load(source)
