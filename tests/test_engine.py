"""The semantics of docs/api.md, one by one, through the Engine API against real Redis."""
from __future__ import annotations

import asyncio

import pytest

from sca_progress.engine import APPLIED, STALE, InvalidUpdate, Limits, NotFound, ProgressError, now_ms
from sca_progress.engine.records import decode


async def post(engine, key, **fields):
    result = await engine.apply([(key, fields)])
    assert result.results == [APPLIED], result.results
    return result


async def progress(engine, key):
    return (await engine.read(key)).get("progress")


async def test_weighted_rollup_the_specs_example(engine):
    await engine.apply([
        ("_portal.job123.stage_input", {"msg": "Staging Input files for Job123", "weight": 10}),
        ("_portal.job123.qrprocess", {"msg": "Running QR process for Job123", "weight": 100}),
        ("_portal.job123.output_transfer", {"msg": "Transferring output files for Job123", "weight": 2}),
        ("_portal.job123.stage_input.abc", {"progress": 0.2, "msg": "Thawing file ABC"}),
    ])
    assert await progress(engine, "_portal.job123.stage_input") == 0.2
    assert await progress(engine, "_portal.job123") == pytest.approx(10 * 0.2 / 112, abs=1e-15)
    await post(engine, "_portal.job123.qrprocess", progress=0.5)
    assert await progress(engine, "_portal.job123") == pytest.approx((10 * 0.2 + 100 * 0.5) / 112, abs=1e-15)


async def test_child_without_progress_counts_as_zero(engine):
    # The spec: announce sequential children with progress 0 before starting them.
    await engine.apply([("_t.j.s1", {"progress": 1}), ("_t.j.s2", {"progress": 0}), ("_t.j.s3", {"msg": "later"})])
    assert await progress(engine, "_t.j") == pytest.approx(1 / 3)


async def test_weight_zero_counts_for_nothing_and_weight_changes_reweigh(engine):
    await engine.apply([("_t.j.a", {"progress": 1, "weight": 0}), ("_t.j.b", {"progress": 0.5})])
    assert await progress(engine, "_t.j") == 0.5
    await post(engine, "_t.j.a", weight=3)
    assert await progress(engine, "_t.j") == pytest.approx((3 + 0.5) / 4)
    await post(engine, "_t.j.a", weight=None)  # back to the default, 1
    assert await progress(engine, "_t.j") == pytest.approx(0.75)


async def test_parent_keeps_its_own_value_while_children_weigh_nothing(engine):
    await post(engine, "_t.j.p", progress=0.3)
    await post(engine, "_t.j.p.c", progress=0.9, weight=0)
    assert await progress(engine, "_t.j.p") == 0.3
    await post(engine, "_t.j.p.c", weight=1)
    assert await progress(engine, "_t.j.p") == 0.9
    await post(engine, "_t.j.p.c", weight=0)
    assert await progress(engine, "_t.j.p") == 0.3
    await post(engine, "_t.j.q.c", progress=0.9, weight=0)  # never posted to: no progress of its own
    assert "progress" not in await engine.read("_t.j.q")


async def test_progress_posted_to_a_parent_stands_until_the_next_child_update(engine):
    await engine.apply([("_t.j.a", {"progress": 0.2}), ("_t.j.b", {"progress": 0.4})])
    await post(engine, "_t.j", progress=0.9)
    assert await progress(engine, "_t.j") == 0.9
    await post(engine, "_t.j.a", msg="any child update recomputes")
    assert await progress(engine, "_t.j") == pytest.approx(0.3)
    # In one batch the order decides, as if applied one by one.
    await engine.apply([("_t.j.a", {"progress": 0.6}), ("_t.j", {"progress": 0.1})])
    assert await progress(engine, "_t.j") == 0.1
    await engine.apply([("_t.j", {"progress": 0.1}), ("_t.j.a", {"progress": 0.8})])
    assert await progress(engine, "_t.j") == pytest.approx(0.6)


async def test_missing_ancestors_are_created_with_weight_1(engine):
    await post(engine, "_t.j.a.b.c", progress=1)
    for key in ("_t.j", "_t.j.a", "_t.j.a.b"):
        node = await engine.read(key)
        assert node["progress"] == 1 and "weight" not in node
    assert (await engine.read("_t.j", depth=4))["tasks"][0]["tasks"][0]["_children"] == ["_t.j.a.b.c"]


async def test_any_json_value_is_kept_with_its_type_and_null_removes(engine):
    extra = {"count": 3, "ratio": 0.125, "ok": True, "tags": ["a", 1, None], "meta": {"host": "n1", "gpu": [0, 1]},
             "text": "naïve ✓ <b>", "big": 2 ** 53 + 1}
    await post(engine, "_t.j.a", msg="m", name="Important Work", **extra)
    node = await engine.read("_t.j.a")
    for k, v in {**extra, "msg": "m", "name": "Important Work"}.items():
        assert node[k] == v and type(node[k]) is type(v), k
    await post(engine, "_t.j.a", msg=None, meta=None)
    node = await engine.read("_t.j.a")
    assert "msg" not in node and "meta" not in node and node["count"] == 3


async def test_full_precision(engine):
    p = 0.12345678901234568
    await post(engine, "_t.j.a", progress=p)
    assert await progress(engine, "_t.j.a") == p
    await post(engine, "_t.j.b", progress=0.1, weight=3)
    assert await progress(engine, "_t.j") == (1000 * p + 3000 * 0.1) / 4000


async def test_finished_parent_is_exactly_1(engine):
    ups = [(f"_t.j.c{i}", {"progress": 0.1 * k, "weight": 0.1 * (i + 1)}) for k in range(1, 11) for i in range(7)]
    await engine.apply(ups)
    for i in range(7):
        await post(engine, f"_t.j.c{i}", progress=1)
    assert await progress(engine, "_t.j") == 1


async def test_server_times(engine):
    t0 = now_ms()
    await post(engine, "_t.j.a", status="running")
    a = await engine.read("_t.j.a")
    assert t0 <= a["start_time"] == a["update_time"] <= now_ms()
    assert "end_time" not in a
    await asyncio.sleep(0.01)
    await post(engine, "_t.j.a", status="finished")
    a2, root = await engine.read("_t.j.a"), await engine.read("_t.j")
    assert a2["start_time"] == a["start_time"] and a2["update_time"] > a["update_time"]
    assert a2["end_time"] == a2["update_time"]
    assert root["update_time"] == a2["update_time"]  # the last change anywhere below it
    await post(engine, "_t.j.a", status="failed")  # another terminal status: a new end
    assert (await engine.read("_t.j.a"))["end_time"] >= a2["end_time"]
    await post(engine, "_t.j.a", status="running")  # retried: no end any more
    assert "end_time" not in await engine.read("_t.j.a")


async def test_status_counts_and_parents_status_is_never_derived(engine):
    await engine.apply([("_t.j.a", {"status": "running"}), ("_t.j.b", {"status": "running"}),
                        ("_t.j.c", {"status": "finished"}), ("_t.j.d", {"msg": "no status"})])
    root = await engine.read("_t.j")
    assert root["_status_counts"] == {"running": 2, "finished": 1, "none": 1}
    assert "status" not in root
    await engine.apply([("_t.j.a", {"status": "finished"}), ("_t.j.d", {"status": "my own state"}),
                        ("_t.j.b", {"status": None})])
    assert (await engine.read("_t.j"))["_status_counts"] == {"finished": 2, "my own state": 1, "none": 1}
    assert "_status_counts" not in await engine.read("_t.j.a")  # leaves have none


async def test_eta_from_the_observed_rate(engine):
    await post(engine, "_t.j.a", progress=0.0)
    assert "eta" not in await engine.read("_t.j.a")  # one sample
    await asyncio.sleep(0.05)
    await post(engine, "_t.j.a", progress=0.25)
    a = await engine.read("_t.j.a")
    # 0.25 in ~50 ms: the remaining 0.75 takes ~150 ms more.
    assert a["update_time"] + 50 < a["eta"] < a["update_time"] + 2000
    assert "eta" in await engine.read("_t.j")  # parents get one too
    await asyncio.sleep(0.02)
    await post(engine, "_t.j.a", progress=1)
    assert "eta" not in await engine.read("_t.j.a")  # done
    await post(engine, "_t.j.b", progress=0.5)
    await asyncio.sleep(0.02)
    await post(engine, "_t.j.b", progress=0.2)  # going back: no positive rate, no eta
    assert "eta" not in await engine.read("_t.j.b")


async def test_ts_guard(engine):
    await post(engine, "_t.j.a", progress=0.5, ts=100)
    result = await engine.apply([("_t.j.a", {"progress": 0.1, "ts": 99})])
    assert result.results == [STALE] and result.changed == []
    assert await progress(engine, "_t.j.a") == 0.5
    await post(engine, "_t.j.a", progress=0.6, ts=100)  # equal ts applies
    await post(engine, "_t.j.a", progress=0.7)  # no ts: always applies
    assert await progress(engine, "_t.j.a") == 0.7
    # Reordered in one batch: the older one is ignored.
    result = await engine.apply([("_t.j.a", {"progress": 0.9, "ts": 300}), ("_t.j.a", {"progress": 0.8, "ts": 200})])
    assert result.results == [APPLIED, STALE]
    assert await progress(engine, "_t.j.a") == 0.9


async def test_applying_the_same_update_twice_is_harmless(engine):
    await engine.apply([("_t.j.a", {"progress": 0.4, "status": "running"}), ("_t.j.b", {"progress": 1})])
    before = await engine.read("_t.j", depth=2)
    await engine.apply([("_t.j.a", {"progress": 0.4, "status": "running"})])
    after = await engine.read("_t.j", depth=2)
    assert after["progress"] == before["progress"] and after["_status_counts"] == before["_status_counts"]


async def test_a_bad_update_gets_its_own_error_and_the_rest_apply(engine):
    result = await engine.apply([("_t.j.a", {"progress": 0.5}), ("_t.j.b", {"progress": 7}),
                                 ("bad..key", {}), ("_t", {"progress": 1}), ("_t.j.c", {"progress": 1})])
    assert result.results[0] == APPLIED and result.results[4] == APPLIED
    assert [r.code for r in result.results[1:4]] == ["bad-progress", "bad-key", "namespace-key"]
    assert await progress(engine, "_t.j") == 0.75
    with pytest.raises(NotFound):
        await engine.read("_t.j.b")


async def test_apply_returns_every_changed_node_once_ancestors_first(engine):
    result = await engine.apply([("_t.j.a.x", {"progress": 0.1}), ("_t.j.a.y", {"progress": 0.3}),
                                 ("_t.j.a.x", {"progress": 0.5}), ("_t.j.b", {"msg": "hi"}),
                                 ("_u.k", {"progress": 1})])
    keys = [k for k, _ in result.changed]
    assert sorted(keys) == sorted(["_t.j", "_t.j.a", "_t.j.a.x", "_t.j.a.y", "_t.j.b", "_u.k"])
    assert keys.index("_t.j") < keys.index("_t.j.a") < keys.index("_t.j.a.x")
    assert result.node("_t.j.a.x")["progress"] == 0.5  # updates of one key apply in order
    assert result.node("_t.j.a")["progress"] == 0.4
    read = await engine.read("_t.j")
    assert decode("_t.j", dict(result.changed)["_t.j"]) == {
        k: v for k, v in read.items() if not k.startswith("_children")}


async def test_snapshot_modes(engine):
    ups = [("_t.j.a.x", {"progress": 0.1}), ("_u.k.z", {"progress": 0.2})]
    assert (await engine.apply(ups, snapshots="none")).changed == []
    assert sorted(k for k, _ in (await engine.apply(ups, snapshots="updated")).changed) == ["_t.j.a.x", "_u.k.z"]
    res = await engine.apply(ups, snapshots="all")
    assert sorted(k for k, _ in res.changed) == ["_t.j", "_t.j.a", "_t.j.a.x", "_u.k", "_u.k.z"]
    with pytest.raises(KeyError):
        await engine.apply(ups, snapshots="some")


async def test_too_many_fields_on_one_node(redis_client, prefix, make_engine):
    from sca_progress.engine import Limits

    engine = await make_engine(prefix=prefix, limits=Limits(max_fields_per_node=5))
    await post(engine, "_t.j.a", msg="1", f1=1, f2=2, f3=3, f4=4)
    result = await engine.apply([("_t.j.a", {"f5": 5}), ("_t.j.a", {"f4": None}), ("_t.j.a", {"f6": 6})])
    assert result.results[0].code == "too-many-fields"
    assert result.results[1:] == [APPLIED, APPLIED]
    node = await engine.read("_t.j.a")
    assert "f5" not in node and node["f6"] == 6 and "f4" not in node


async def test_reads_depth_children_and_paging(engine):
    await engine.apply([(f"_t.j.c{i:02d}.leaf", {"progress": i / 20}) for i in range(20)])
    one = await engine.read("_t.j")
    assert "tasks" not in one and one["_children"] == [f"_t.j.c{i:02d}" for i in range(20)]
    assert one["_children_total"] == 20 and "_children_next" not in one
    two = await engine.read("_t.j", depth=2)
    assert [t["key"] for t in two["tasks"]] == one["_children"]
    assert all(t["_children"] == [t["key"] + ".leaf"] and "tasks" not in t for t in two["tasks"])
    three = await engine.read("_t.j", depth=3)
    leaf = three["tasks"][3]["tasks"][0]
    assert leaf["key"] == "_t.j.c03.leaf" and "_children" not in leaf and "tasks" not in leaf
    # Paging, in first-seen order.
    seen, cursor = [], None
    while True:
        page = await engine.read("_t.j", depth=2, limit=7, cursor=cursor)
        assert page["_children_total"] == 20 and [t["key"] for t in page["tasks"]] == page["_children"]
        seen += page["_children"]
        cursor = page.get("_children_next")
        if cursor is None:
            break
    assert seen == one["_children"]


async def test_read_errors(engine):
    await post(engine, "_t.j.a", progress=1)
    with pytest.raises(NotFound):
        await engine.read("_t.j.nope")
    with pytest.raises(NotFound):
        await engine.read("_nothing")
    for kwargs, code in [({"depth": 0}, "bad-depth"), ({"depth": 17}, "bad-depth"), ({"limit": 0}, "bad-limit"),
                         ({"limit": 10_001}, "bad-limit"), ({"cursor": "x"}, "bad-cursor"),
                         ({"order": "recent"}, "bad-order")]:
        with pytest.raises(InvalidUpdate) as e:
            await engine.read("_t.j", **kwargs)
        assert e.value.code == code


async def test_read_caps(redis_client, prefix, make_engine):
    from sca_progress.engine import Limits

    engine = await make_engine(prefix=prefix, limits=Limits(max_read_nodes=30, max_read_child_keys=80))
    await engine.apply([(f"_t.j.c{i}.g{k}", {}) for i in range(10) for k in range(6)])
    await engine.read("_t.j", depth=2)  # 11 nodes, 70 child keys listed
    with pytest.raises(InvalidUpdate, match="more than 30 nodes"):
        await engine.read("_t.j", depth=3)  # 71 nodes
    tight = await make_engine(prefix=prefix, limits=Limits(max_read_child_keys=60))
    with pytest.raises(InvalidUpdate, match="more than 60 child keys"):
        await tight.read("_t.j", depth=2)


async def test_namespaces_list_their_trees(engine):
    for j in ("job3", "job1", "job2"):
        await post(engine, f"_portal.{j}.a", progress=0.5)
        await asyncio.sleep(0.005)
    await post(engine, "_sca._sub.x.y", progress=1)
    await post(engine, "bare.a", progress=1)
    ns = await engine.read("_portal", depth=2)
    assert ns["namespace"] is True and ns["_children"] == ["_portal.job3", "_portal.job1", "_portal.job2"]
    assert [t["progress"] for t in ns["tasks"]] == [0.5, 0.5, 0.5]
    top = await engine.read("")
    assert top["_children"] == ["_portal", "_sca", "bare"]
    nested = await engine.read("_sca", depth=3)
    assert nested["tasks"][0]["key"] == "_sca._sub" and nested["tasks"][0]["tasks"][0]["key"] == "_sca._sub.x"
    await asyncio.sleep(0.005)
    await post(engine, "_portal.job3.b", progress=1)
    # A tree's recency is written at most once per refresh interval, riding
    # along with a later round trip: within the interval it stays put...
    recent = await engine.read("_portal", order="recent")
    assert recent["_children"] == ["_portal.job2", "_portal.job1", "_portal.job3"]
    # ...and once the interval has passed, the next write (or flush) moves it.
    engine.namespaces.refresh_ms = 0
    await post(engine, "_portal.job3.b", progress=1)
    assert not (await engine.read("_portal", order="recent"))["_children"][0] == "_portal.job3"
    await engine.flush_index()
    recent = await engine.read("_portal", order="recent")
    assert recent["_children"] == ["_portal.job3", "_portal.job2", "_portal.job1"]
    seen, cursor = [], None
    while True:
        page = await engine.read("_portal", order="recent", limit=1, cursor=cursor)
        seen += page["_children"]
        cursor = page.get("_children_next")
        if not cursor:
            break
    assert seen == recent["_children"]


async def test_delete_subtree(engine):
    await engine.apply([("_t.j.a.x", {"progress": 1, "status": "finished"}), ("_t.j.a.y", {"progress": 1}),
                        ("_t.j.b", {"progress": 0, "status": "running"})])
    assert await progress(engine, "_t.j") == 0.5
    result = await engine.delete("_t.j.a")
    assert [k for k, _ in result.changed] == ["_t.j"]
    root = await engine.read("_t.j")
    assert root["progress"] == 0 and root["_children"] == ["_t.j.b"] and root["_status_counts"] == {"running": 1}
    for key in ("_t.j.a", "_t.j.a.x"):
        with pytest.raises(NotFound):
            await engine.read(key)
    with pytest.raises(NotFound):
        await engine.delete("_t.j.a")
    # A new node at the same key starts fresh: nothing of the old subtree shows.
    await post(engine, "_t.j.a.z", progress=0.2)
    a = await engine.read("_t.j.a", depth=2)
    assert a["_children"] == ["_t.j.a.z"] and a["progress"] == 0.2
    with pytest.raises(NotFound):
        await engine.read("_t.j.a.x")


async def test_delete_tree_root_unlists_it(engine, redis_client, prefix):
    await post(engine, "_portal.job1.a", progress=1)
    await post(engine, "_portal.job2.a", progress=1)
    await engine.delete("_portal.job1")
    assert (await engine.read("_portal"))["_children"] == ["_portal.job2"]
    await engine.delete("_portal.job2")
    with pytest.raises(NotFound):
        await engine.read("_portal")
    assert (await engine.read(""))["_children_total"] == 0
    await engine.collect_garbage()
    left = [k async for k in redis_client.scan_iter(match=f"{prefix}:*")]
    # only namespace counters, and the prefix's record-format and history-settings markers
    markers = {f"{prefix}:format".encode(), f"{prefix}:history".encode()}
    assert all(b":{*}:" in k or b":{_portal}:" in k or k in markers for k in left), left
    with pytest.raises(InvalidUpdate):
        await engine.delete("_portal")


async def test_prefixes_keep_deployments_apart(redis_client, prefix, make_engine):
    a, b = await make_engine(prefix=prefix + "-a"), await make_engine(prefix=prefix + "-b")
    await post(a, "_t.j.x", progress=1)
    with pytest.raises(NotFound):
        await b.read("_t.j")


async def test_a_big_batch_of_one_tree_is_split_over_calls_in_order(redis_client, prefix, make_engine):
    engine = await make_engine(prefix=prefix, max_updates_per_call=100)
    ups = [(f"_t.big.p{i % 250}", {"progress": (i // 250) / 10, "status": "finished" if i >= 2250 else "running"})
           for i in range(2500)]
    res = await engine.apply(ups, events=True)
    assert res.results == [APPLIED] * 2500
    node = await engine.read("_t.big")
    assert node["progress"] == pytest.approx(0.9) and node["_status_counts"] == {"finished": 250}
    assert len(res.events) == 250


async def test_a_batch_too_big_for_one_lua_unpack(redis_client, prefix, make_engine):
    """5,000 nodes finishing in one call: every list the scripts write goes in chunks."""
    engine = await make_engine(prefix=prefix, max_updates_per_call=10_000)
    res = await engine.apply([(f"_t.wide.n{i}", {"status": "finished"}) for i in range(5000)], events=True)
    assert res.results == [APPLIED] * 5000 and len(res.events) == 5000
    assert len(await engine.pending_events(min_age_ms=0)) == 5000


async def test_one_tree_per_call_gives_the_same_trees(redis_client, prefix, make_engine):
    ups = [(f"_t.j{i % 5}.s{i % 3}.l{i}", {"progress": (i % 10) / 10}) for i in range(300)]
    trees = []
    for flag, suffix in ((False, "-m"), (True, "-c")):
        engine = await make_engine(prefix=prefix + suffix, one_tree_per_call=flag, max_updates_per_call=50)
        await engine.apply(ups)
        trees.append([await engine.read(f"_t.j{i}", depth=3) for i in range(5)])

    def strip(n):
        return {k: (strip(v) if isinstance(v, dict) else [strip(x) for x in v] if k == "tasks" else v)
                for k, v in n.items() if k not in ("start_time", "update_time", "run_time", "eta")}

    assert [strip(t) for t in trees[0]] == [strip(t) for t in trees[1]]


async def test_completion_events_once_per_entry_and_outbox(engine):
    res = await engine.apply([("_t.j.a", {"status": "running"}), ("_t.j.b", {"status": "finished"})], events=True)
    assert [(e.key, e.status) for e in res.events] == [("_t.j.b", "finished")]
    ev = res.events[0]
    assert ev.id == f"_t.j.b@{ev.end_time}" and ev.duration_ms == ev.end_time - ev.start_time >= 0
    res = await engine.apply([("_t.j.b", {"status": "finished", "msg": "again"})], events=True)
    assert res.events == []  # still finished: not a new entry
    res = await engine.apply([("_t.j", {"status": "canceled"}), ("_t.j.a", {"status": "failed"})], events=True)
    assert sorted(e.key for e in res.events) == ["_t.j", "_t.j.a"]  # parents too, when told
    # Everything stays in the outbox until acknowledged.
    pending = await engine.pending_events(min_age_ms=0)
    assert sorted(e.key for e in pending) == ["_t.j", "_t.j.a", "_t.j.b"]
    await engine.ack_events(pending[:2])
    assert len(await engine.pending_events(min_age_ms=0)) == 1
    assert await engine.pending_events(min_age_ms=60_000) == []
    res = await engine.apply([("_t.j.c", {"status": "finished"})])  # events off: nothing recorded
    assert res.events == [] and len(await engine.pending_events(min_age_ms=0)) == 1


async def test_a_prefix_with_trees_of_an_older_format_is_refused(redis_client, prefix, make_engine):
    """Trees written before the record format had a version (format 1) are not
    misread: the engine refuses to start on that prefix, saying what to do."""
    from sca_progress.engine.errors import StoredFormatError

    await redis_client.hset(f"{prefix}:{{_t.j}}:t", "_t.j", b"\x00" * 152)  # a format 1 record
    with pytest.raises(StoredFormatError, match="record format 1"):
        await make_engine()
    await redis_client.delete(f"{prefix}:{{_t.j}}:t")
    await make_engine()  # an empty prefix is marked as format 2
    assert await redis_client.get(f"{prefix}:format") == b"2"


async def test_a_tree_written_while_it_is_deleted_stays_listed(engine):
    """DELETE detaches the tree, then unlists it: a write in between creates the
    tree anew, and the late unlisting must not hide it (it would then never
    be listed, nor purged)."""
    await post(engine, "_race.j1.a", progress=0.5)
    await post(engine, "_race.j2.a", progress=0.5)
    root = "_race.j1"
    (reply,) = await engine.scripts.run(engine.redis, [("delete_subtree", [engine.keys.records(root)],
                                                        [now_ms(), 60000, "", 0, "", ""])])
    await post(engine, "_race.j1.b", progress=1)  # the write that races the delete: a new tree
    await engine.unlist_tree(root)  # the delete's second step, late
    assert sorted((await engine.read("_race"))["_children"]) == ["_race.j1", "_race.j2"]
    await engine.delete("_race.j1")
    await engine.delete("_race.j2")
    await post(engine, "_race.j3.a", progress=1)  # a new tree of the namespace emptied meanwhile...
    await engine.unlist_tree("_race.j2")  # ...and an unlisting that comes late
    assert (await engine.read(""))["_children"] == ["_race"] and (await engine.read("_race"))["_children"] == [
        "_race.j3"]


async def test_refused_and_stale_updates_are_no_activity(make_engine, redis_client):
    """A stale update (older ts) or a refused one moves no namespace index, and a
    tree whose first update is refused is neither listed nor stored."""
    from sca_progress.engine import Limits

    engine = await make_engine(limits=Limits(max_nodes_per_tree=3))
    engine.namespaces.refresh_ms = 0
    await post(engine, "_act.old.a", progress=0.5, ts=100)
    await post(engine, "_act.new.a", progress=0.5)
    await engine.flush_index()
    recency = await redis_client.zrange(engine.keys.ns_recent("_act"), 0, -1, withscores=True)
    result = await engine.apply([("_act.old.a", {"progress": 0.1, "ts": 50}),   # stale
                                 ("_act.full.a.b.c", {"progress": 1})])        # 4 nodes: refused
    assert result.results[0] == STALE and result.results[1].code == "tree-full"
    await engine.flush_index()
    assert await redis_client.zrange(engine.keys.ns_recent("_act"), 0, -1, withscores=True) == recency
    assert (await engine.read("_act"))["_children"] == ["_act.old", "_act.new"]
    with pytest.raises(NotFound):
        await engine.read("_act.full")


async def test_a_new_tree_is_listed_in_its_first_round_trip(engine, monkeypatch):
    """A tree this process does not know is listed by a call riding in its
    batch's own round trip, after the write (only if the write happened): a
    job's first update is one round trip, listed before it is answered."""
    trips = []
    original = engine.scripts.run

    async def counted(redis, calls):
        trips.append([name for name, _, _ in calls])
        return await original(redis, calls)

    monkeypatch.setattr(engine.scripts, "run", counted)
    await post(engine, "_one._sub.job1.a", progress=0.5)
    assert trips == [["apply_updates", "list_written_tree"]]
    assert (await engine.read("_one._sub"))["_children"] == ["_one._sub.job1"]
    assert (await engine.read("_one"))["_children"] == ["_one._sub"]
    trips.clear()
    await post(engine, "_one._sub.job1.b", progress=0.5)  # known now: nothing rides along
    assert trips == [["apply_updates"]]
    # A tree whose only update is refused is not written, so not listed.
    trips.clear()
    result = await engine.apply([("_one._sub.job2.a", {"progress": 0.5, "status": "x" * 10_000})])
    assert isinstance(result.results[0], ProgressError) and trips == []  # refused before Redis
    engine.limits = Limits(max_nodes_per_tree=2)
    result = await engine.apply([("_one._sub.job3.a.b", {"progress": 0.5})])
    assert result.results[0].code == "tree-full" and trips == [["apply_updates", "list_written_tree"]]
    assert (await engine.read("_one._sub"))["_children"] == ["_one._sub.job1"]
    # Many new trees in one batch: listed by a second round trip instead, in batch order.
    engine.limits = Limits()
    trips.clear()
    await engine.apply([(f"_many.j{i:02d}.a", {"progress": 0.1}) for i in range(30, 0, -1)])
    assert trips == [["apply_updates"], ["index_trees", "index_trees"]]
    assert (await engine.read("_many", limit=100))["_children"] == [f"_many.j{i:02d}" for i in range(30, 0, -1)]


async def test_deleting_nothing_leaves_no_garbage_mark(engine, redis_client):
    with pytest.raises(NotFound):
        await engine.delete("_nothing.j.a")
    assert not await redis_client.sismember(engine.keys.gc_trees, "_nothing.j")


async def test_honest_times(engine):
    """run_time is when a node first ran (its first progress above 0, or status
    running), not its first update; an eta needs evidence, and never lies in the
    past: a node stalled past its eta gets a later one."""
    await post(engine, "_ht.j.out", progress=0)  # announced, waiting
    await asyncio.sleep(0.05)
    assert "run_time" not in await engine.read("_ht.j.out")
    await post(engine, "_ht.j.out", status="running")
    ran = (await engine.read("_ht.j.out"))["run_time"]
    await asyncio.sleep(0.02)
    res = await engine.apply([("_ht.j.out", {"progress": 1, "status": "finished"})], events=True)
    (ev,) = res.events
    assert ev.run_time == ran and ev.duration_ms == ev.end_time - ran < ev.end_time - ev.start_time

    await post(engine, "_ht.j.slow", progress=0.01)
    await asyncio.sleep(0.05)
    await post(engine, "_ht.j.slow", progress=0.02)  # 1 % in 50 ms: too little evidence
    assert "eta" not in await engine.read("_ht.j.slow")
    await post(engine, "_ht.j.fast", progress=0.1)
    await asyncio.sleep(0.05)
    await post(engine, "_ht.j.fast", progress=0.2)
    fresh = await engine.read("_ht.j.fast")
    assert fresh["update_time"] < fresh["eta"] < fresh["update_time"] + 10_000
    await asyncio.sleep((fresh["eta"] - now_ms()) / 1000 + 0.3)  # stalled past it
    later = await engine.read("_ht.j.fast")
    assert "eta" not in later or later["eta"] > now_ms() - 50


def test_a_stalled_nodes_eta_moves_past_now():
    from sca_progress.engine.records import eta_of

    # 0.5 done at t=100,000 ms after a start at 0, rate 5e-6/ms: due at 200,000.
    assert eta_of(0.5, 100_000, 5e-6, 0) == 200_000
    assert eta_of(0.5, 100_000, 5e-6, 0, now=150_000, tau=120_000) == 200_000  # not due yet: as it was
    for now in (250_000, 500_000):
        assert eta_of(0.5, 100_000, 5e-6, 0, now=now, tau=120_000) > now
    # stalled for 80 minutes against a two-minute rate: no estimate at all, rather than a made-up one
    assert eta_of(0.5, 100_000, 5e-6, 0, now=5_000_000, tau=120_000) is None
    assert eta_of(0.01, 5_000, 2e-6, 0) is None  # 1 % in 5 s: too little evidence


async def test_a_leftover_leaf_under_a_parent_recreated_as_a_leaf_is_created_anew(engine):
    """A status change posted alone to a leaf left over from a deleted subtree,
    whose parent's key now holds a new leaf: the script's one-update path must
    not read that leaf as a parent; the node is created anew under it."""
    await post(engine, "_t.j.a.b", progress=0.5, status="waiting")
    await engine.delete("_t.j.a")  # a.b's record stays until collected
    await post(engine, "_t.j.a", progress=0.2)  # a is a leaf again, with a new id
    await post(engine, "_t.j.a.b", status="running")
    node = await engine.read("_t.j.a", depth=2)
    assert node["_children"] == ["_t.j.a.b"] and node["_status_counts"] == {"running": 1}
    assert node["tasks"][0]["status"] == "running" and "progress" not in node["tasks"][0]
    assert await engine.collect_garbage() >= 1
    assert (await engine.read("_t.j.a", depth=2))["_status_counts"] == {"running": 1}
