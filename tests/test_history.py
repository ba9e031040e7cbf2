"""Progress history (lua/include/history.lua, engine/history.py) against a real Redis,
on a clock the test moves."""
from __future__ import annotations

import pytest

from sca_progress.engine import engine as engine_module
from sca_progress.engine import history

T0 = 1_800_000_000_000


@pytest.fixture
def clock(monkeypatch):
    """The engine's clock for apply: set clock.now (ms)."""
    class Clock:
        now = T0
    c = Clock()
    monkeypatch.setattr(engine_module, "now_ms", lambda: c.now)
    return c


async def post(e, clock, at, *updates):
    clock.now = T0 + at
    res = await e.apply(updates)
    assert not any(isinstance(r, Exception) for r in res.results), res.results


async def stored(redis_client, e, root) -> dict:
    """The tree's stored histories: Redis key -> value."""
    keys = [k async for k in redis_client.scan_iter(match=e.keys.tree(root) + "h:*")]
    return dict(zip(keys, await redis_client.mget(keys))) if keys else {}


async def hist(e, key):
    node = await e.read(key, history=True)
    return node.get("_history")


async def test_samples_lie_on_a_grid_that_coarsens_to_span_the_life(make_engine, clock):
    e = await make_engine(history_samples=4, history_step_ms=100)
    await post(e, clock, 0, ("_h.j.a", {"progress": 0.1}))
    assert await hist(e, "_h.j.a") is None  # created: no grid point before now yet
    await post(e, clock, 50, ("_h.j.a", {"progress": 0.2}))
    h = await hist(e, "_h.j.a")  # 0 ms lies in [0, 50), where the progress was 0.1
    assert (h["step_ms"], h["samples"]) == (100, [0.1])
    # 100 and 200 ms lie in [50, 250): the progress held there was 0.2.
    await post(e, clock, 250, ("_h.j.a", {"progress": 0.5}))
    h = await hist(e, "_h.j.a")
    assert (h["step_ms"], h["samples"]) == (100, [0.1, 0.2, 0.2])
    # 450 ms: five grid points of 100 ms would pass 4 samples: every other one
    # goes, the step doubles, and 400 ms takes the value held since 250.
    await post(e, clock, 450, ("_h.j.a", {"progress": 0.9}))
    h = await hist(e, "_h.j.a")
    assert (h["step_ms"], h["samples"]) == (200, [0.1, 0.2, 0.5])
    root = await hist(e, "_h.j")  # the parent follows its only child
    assert (root["step_ms"], root["samples"]) == (200, [0.1, 0.2, 0.5])
    # A week later: still at most 4 samples, the whole life spanned.
    week = 7 * 86_400_000
    await post(e, clock, week, ("_h.j.a", {"progress": 1}))
    h = await hist(e, "_h.j.a")
    assert len(h["samples"]) <= 4 and h["step_ms"] * len(h["samples"]) >= week
    assert h["step_ms"] * (len(h["samples"]) - 1) < week
    assert h["samples"][0] == 0.1 and h["samples"][-1] == 0.9


async def test_an_update_that_crosses_no_grid_point_writes_no_history(make_engine, clock, redis_client):
    e = await make_engine(history_samples=8, history_step_ms=1000)
    await post(e, clock, 0, ("_q.j.a", {"progress": 0}))
    await post(e, clock, 100, ("_q.j.a", {"progress": 0.1}))  # crosses 0 ms
    first = await stored(redis_client, e, "_q.j")
    assert len(first) == 2  # the leaf's and its parent's
    for at in (500, 999, 1000):  # 1000 ms is not before now: not crossed yet
        await post(e, clock, at, ("_q.j.a", {"progress": at / 1000}))
        assert await stored(redis_client, e, "_q.j") == first
    await post(e, clock, 1001, ("_q.j.a", {"status": "finished"}))
    h = await hist(e, "_q.j.a")
    assert h["samples"] == [0.0, 1.0]


async def test_no_history_when_it_is_off(make_engine, clock, redis_client):
    e = await make_engine(history_samples=0)
    for at in (0, 5000, 10_000):
        await post(e, clock, at, ("_o.j.a", {"progress": at / 20_000}))
    assert await stored(redis_client, e, "_o.j") == {}
    assert await hist(e, "_o.j.a") is None


async def test_calls_of_many_updates_per_tree_sample_as_single_updates_do(make_engine, clock):
    """One update per tree per call takes apply_single; several take the
    general path: both must write the same history."""
    e = await make_engine(history_samples=6, history_step_ms=100)
    for step, at in enumerate((0, 130, 260, 390, 700, 1300)):
        p = step / 10
        await post(e, clock, at, ("_s.j.x.leaf", {"progress": p}))
        await post(e, clock, at, ("_m.j.x.leaf", {"progress": p}), ("_m.j.x.other", {"msg": "hi"}))
    for key in ("j", "j.x", "j.x.leaf"):
        single, general = await hist(e, f"_s.{key}"), await hist(e, f"_m.{key}")
        assert single is not None
        if key == "j.x.leaf":
            assert general == single
        else:  # the parents of _m also count the other leaf (no progress: 0)
            assert general["step_ms"] == single["step_ms"]
            assert len(general["samples"]) == len(single["samples"])
    leaf = await hist(e, "_s.j.x.leaf")
    assert leaf["step_ms"] == 400 and leaf["samples"] == [0.0, 0.3, 0.4, 0.4]


async def test_a_deleted_node_takes_its_history_along(make_engine, clock, redis_client):
    e = await make_engine(history_samples=8, history_step_ms=100)
    await post(e, clock, 0, ("_d.j.a.x", {"progress": 0.5}), ("_d.j.b", {"progress": 0.5}))
    await post(e, clock, 350, ("_d.j.a.x", {"progress": 0.7}), ("_d.j.b", {"progress": 0.6}))
    assert len(await stored(redis_client, e, "_d.j")) == 4  # the root, a, a.x and b
    await e.delete("_d.j.a")
    assert len(await stored(redis_client, e, "_d.j")) == 3  # a.x: a leftover until freed
    # A new node at the same key starts a history of its own, before and after the old one is freed.
    await post(e, clock, 400, ("_d.j.a.x", {"progress": 0.1}))
    assert await hist(e, "_d.j.a.x") is None
    await post(e, clock, 420, ("_d.j.a.x", {"progress": 0.2}))
    assert (await hist(e, "_d.j.a.x"))["samples"] == [0.1]
    # The leftover's history went when its record was replaced: the root, b, the new a and a.x.
    assert len(await stored(redis_client, e, "_d.j")) == 4
    await e.collect_garbage("_d.j")
    assert len(await stored(redis_client, e, "_d.j")) == 4
    await post(e, clock, 550, ("_d.j.a.x", {"progress": 0.3}))
    assert (await hist(e, "_d.j.a.x"))["samples"] == [0.1, 0.2]
    await e.delete("_d.j")
    await e.collect_garbage("_d.j")
    assert await stored(redis_client, e, "_d.j") == {}


async def test_a_read_with_history_gives_every_node_its_own(make_engine, clock):
    e = await make_engine(history_samples=8, history_step_ms=100)
    await post(e, clock, 0, ("_r.j.a", {"progress": 0}), ("_r.j.b", {"progress": 0}))
    await post(e, clock, 150, ("_r.j.a", {"progress": 0.4}))
    await post(e, clock, 250, ("_r.j.b", {"progress": 0.8}))
    node = await e.read("_r.j", depth=2, history=True)
    a, b = node["tasks"]
    assert a["_history"]["samples"] == [0.0, 0.0]
    assert b["_history"]["samples"] == [0.0, 0.0, 0.0]
    assert node["_history"]["samples"] == [0.0, 0.0, 0.2]
    assert "_history" not in (await e.read("_r.j", depth=2))


def test_the_trend_is_the_least_squares_line_of_the_last_half():
    node = {"start_time": 0, "update_time": 1000, "progress": 0.45}
    # A steady 0.05 per 100 ms (the first half, twice as slow, is left out).
    samples = [0.0, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4]
    pts = history.points(node, 100, samples)
    assert pts[-1] == [1000, 0.45] and pts[5] == [500, 0.2]
    rate, eta = history.trend(pts, 0)
    assert rate == pytest.approx(0.5) and eta == pytest.approx(2100, abs=1)
    # Bursty progress (a file at a time): the trend stays near the mean pace.
    bursty = [0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4]
    rate, eta = history.trend(history.points({"start_time": 0, "update_time": 1000, "progress": 0.5},
                                             100, bursty), 0)
    assert 0.4 < rate < 0.6 and 1800 < eta < 2300
    assert history.trend([[0, 0.5], [100, 0.5], [200, 0.5]], 0) == (0.0, None)
    assert history.trend([[0, 0.1], [100, 0.2]], 0) == (None, None)


def test_the_trend_eta_is_never_in_the_past():
    """A node that stops moving holds its progress until now: its line
    flattens, and the eta carries that progress on from now."""
    node = {"start_time": 0, "update_time": 1000, "progress": 0.45}
    samples = [0.0, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4]
    pts = history.points(node, 100, samples)
    assert history.trend(pts, 0, now=1000) == history.trend(pts, 0)  # nothing held past its update yet
    for now in (2100, 3000, 60_000):  # its eta by the line was 2100 ms
        rate, eta = history.trend(pts, 0, now=now)
        assert rate < 0.5 and eta > now
        assert eta == pytest.approx(now + 0.55 / (rate / 1000), abs=1)
    # No progress now (it was set to null): no trend, whatever came before.
    gone = history.points({"start_time": 0, "update_time": 1000, "progress": None}, 100, samples)
    assert history.trend(gone, 0, now=1500) == (None, None)
    # A node whose status ended has no trend eta.
    done = dict(node, status="failed")
    assert history.summary(done, 100, samples, 1500)["trend_eta"] is None
    assert history.summary(node, 100, samples, 1500)["trend_eta"] > 1500


async def test_rest_history_route_and_query(server, http):
    base, app = server
    service = app.settings["service"]
    assert service.engine.history_samples == 64
    await http("POST", f"{base}/status/_w.j.a", {"progress": 0.25})
    status, body, _ = await http("GET", f"{base}/status/_w.j.a/history")
    assert status == 200 and body["key"] == "_w.j.a" and body["step_ms"] == 1000
    assert body["points"] == [[body["update_time"], 0.25]]  # no sample yet: the current point
    assert body["trend_eta"] is None
    status, body, _ = await http("GET", f"{base}/status/_w.j?depth=2&history=1")
    assert status == 200 and body["tasks"][0]["key"] == "_w.j.a"
    status, body, _ = await http("GET", f"{base}/status/_w.j?history=2")
    assert status == 400 and body["error"]["code"] == "bad-history"
    status, body, _ = await http("GET", f"{base}/status/_w/history")
    assert status == 400 and body["error"]["code"] == "bad-key"
    status, body, _ = await http("GET", f"{base}/status/_w.nope/history")
    assert status == 404


async def test_a_delete_samples_the_ancestors_it_changes(make_engine, clock):
    """A delete moves its parent's progress and update_time: the grid points
    the parent crossed until then take the progress it held before."""
    e = await make_engine(history_samples=8, history_step_ms=100)
    await post(e, clock, 0, ("_g.j.a", {"progress": 0.2}), ("_g.j.b", {"progress": 0.4}))
    await post(e, clock, 150, ("_g.j.a", {"progress": 0.6}))
    assert (await hist(e, "_g.j"))["samples"] == [0.3, 0.3]
    clock.now = T0 + 260
    await e.delete("_g.j.b")  # 200 ms: the root held (0.6 + 0.4) / 2 until now
    assert (await hist(e, "_g.j"))["samples"] == [0.3, 0.3, 0.5]
    await post(e, clock, 420, ("_g.j.a", {"progress": 0.8}))
    h = await hist(e, "_g.j")
    assert h["step_ms"] == 100 and h["samples"] == [0.3, 0.3, 0.5, 0.6, 0.6]
    assert (await hist(e, "_g.j.a"))["samples"] == [0.2, 0.2, 0.6, 0.6, 0.6]
    # Deeper: every ancestor of the deleted node is sampled, none is skipped.
    await post(e, clock, 500, ("_g.j.x.y.z", {"progress": 1}), ("_g.j.x.y.w", {"progress": 0}))
    clock.now = T0 + 730
    await e.delete("_g.j.x.y.w")
    # x.y held (1 + 0) / 2 from its start at 500 ms: at 500, 600 and 700 ms; so did x.
    assert (await hist(e, "_g.j.x.y"))["samples"] == [0.5, 0.5, 0.5]
    assert (await hist(e, "_g.j.x"))["samples"] == [0.5, 0.5, 0.5]
    # The root held (0.8 + 0.5) / 2 over the same times.
    assert (await hist(e, "_g.j"))["samples"] == [0.3, 0.3, 0.5, 0.6, 0.6, 0.65, 0.65, 0.65]
    assert (await e.read("_g.j"))["progress"] == 0.9


async def test_a_history_written_under_another_step_is_resampled(make_engine, clock):
    """Restarted with another --history-step, a node's next sample finds a
    value the record does not account for: it is resampled onto the new
    grid (each point takes the stored sample at or before its time), never
    relabelled."""
    e = await make_engine(history_samples=64, history_step_ms=100)
    for k in range(12):  # +0.01 every 250 ms
        await post(e, clock, 250 * k, ("_st.j", {"progress": k / 100}))
    assert (await hist(e, "_st.j"))["samples"][:6] == [0.0, 0.0, 0.0, 0.01, 0.01, 0.02]
    e2 = await make_engine(history_samples=64, history_step_ms=300)  # the same prefix: the same trees
    await post(e2, clock, 3100, ("_st.j", {"progress": 0.2}))
    h = await hist(e2, "_st.j")
    assert h["step_ms"] == 300
    # What the node held at 0, 300, ..., 3000 ms: 0.01 from 250 ms, 0.02 from
    # 500 ms, ..., 0.11 from 2750 ms on.
    assert h["samples"] == [min(t // 250, 11) / 100 for t in range(0, 3100, 300)]


async def test_a_history_of_other_settings_is_rewritten_even_when_its_length_fits(make_engine, clock):
    """One sample under a 1 s step, then a start with a 2 s step: the old
    value happens to have the length the new grid expects after one more
    sample, so only the settings' change tells that it must be rewritten."""
    e = await make_engine(history_samples=64, history_step_ms=1000)
    await post(e, clock, 0, ("_rl.j", {"progress": 0.1}))
    await post(e, clock, 500, ("_rl.j", {"progress": 0.2}))  # the sample at 0 ms: 0.1
    e2 = await make_engine(history_samples=64, history_step_ms=2000)
    await post(e2, clock, 10_000, ("_rl.j", {"progress": 0.3}))
    h = await hist(e2, "_rl.j")
    assert (h["step_ms"], h["samples"]) == (2000, [0.1, 0.2, 0.2, 0.2, 0.2])
    # A start with the same settings keeps the date: later samples are appended as usual.
    e3 = await make_engine(history_samples=64, history_step_ms=2000)
    assert e3.history_since_ms == e2.history_since_ms
    await post(e3, clock, 12_500, ("_rl.j", {"progress": 0.4}))
    assert (await hist(e3, "_rl.j"))["samples"] == [0.1, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3]


@pytest.mark.parametrize("at, step, expected", [
    # 1,250 ms: 7 points of 100 ms no longer fit 8 samples of 200 ms' grid... they
    # do: the step doubles, and the samples at 0, 200, 400, 600 ms stay.
    (1250, 200, [0.01, 0.2, 0.4, 0.6, 0.7, 0.7, 0.7]),
    # 3,050 ms: the step grows four-fold at once; of the 7 stored samples, the
    # ones at 0 and 400 ms stay (the last group of 4 is not whole: 800 ms was
    # never stored), then what the node held since 650 ms.
    (3050, 400, [0.01, 0.4, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]),
])
async def test_a_coarser_step_keeps_every_rth_sample(make_engine, clock, at, step, expected):
    """When the step grows r-fold, sample i of the new grid is the stored
    sample i * r (lua/include/history.lua keeps the first of each group of
    r in one pass), whether or not the last group is whole."""
    e = await make_engine(history_samples=8, history_step_ms=100)
    await post(e, clock, 0, ("_co.j", {"progress": 0.01}))
    for k in range(7):  # 0.1 from 50 ms, 0.2 from 150 ms, ..., 0.7 from 650 ms
        await post(e, clock, 100 * k + 50, ("_co.j", {"progress": (k + 1) / 10}))
    assert (await hist(e, "_co.j"))["samples"] == [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    await post(e, clock, at, ("_co.j", {"progress": 1}))
    h = await hist(e, "_co.j")
    assert (h["step_ms"], h["samples"]) == (step, expected)
