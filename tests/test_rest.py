"""The REST API over real HTTP: routes, answers, and every kind of bad input."""
from __future__ import annotations

import gzip
import time

import orjson
import pytest


async def test_health(server, http):
    base, _ = server
    status, body, _ = await http("GET", f"{base}/health")
    assert status == 200 and body["status"] == "ok" and body["redis"] == "ok" and body["_now"] > 0


async def test_post_then_get_the_specs_examples(server, http):
    base, _ = server
    status, node, _ = await http("POST", f"{base}/status/_sca.123.prep",
                                 {"status": "running", "progress": 0.8, "name": "Important Work",
                                  "msg": "doing something important"})
    assert status == 200 and node["_applied"] is True and node["_now"] >= node["update_time"]
    assert node["progress"] == 0.8 and node["name"] == "Important Work" and node["key"] == "_sca.123.prep"
    # curl -X POST -H "Content-Type: application/json" -d '{"status": "waiting", ...}'
    status, node, _ = await http("POST", f"{base}/status/_sca.123.download",
                                 b'{"status": "waiting", "progress": 0, "msg":"Downloading data"}',
                                 {"Content-Type": "application/json"})
    assert status == 200 and node["status"] == "waiting"
    status, tree, resp = await http("GET", f"{base}/status/_sca.123?depth=2")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    assert tree["progress"] == 0.4 and tree["_children"] == ["_sca.123.prep", "_sca.123.download"]
    assert [t["key"] for t in tree["tasks"]] == tree["_children"] and "_now" in tree
    status, one, _ = await http("GET", f"{base}/status/_sca.123")
    assert "tasks" not in one and one["_children_total"] == 2


async def test_batch_results_in_input_order(server, http):
    base, _ = server
    status, body, _ = await http("POST", f"{base}/status", [
        {"key": "_b.j.a", "progress": 1},
        {"key": "_b.j.b", "progress": 7},
        {"progress": 1},
        "not an object",
        {"key": "_b.j.c", "progress": 0.5, "ts": 10},
        {"key": "_b.j.c", "progress": 0.1, "ts": 5},
    ])
    assert status == 200 and body["_now"] > 0
    r = body["results"]
    assert r[0]["ok"] and r[0]["applied"] and r[0]["node"]["progress"] == 1
    assert not r[1]["ok"] and r[1]["error"]["code"] == "bad-progress" and r[1]["key"] == "_b.j.b"
    assert r[2]["error"]["code"] == "bad-item" and r[3]["error"]["code"] == "bad-item"
    assert r[4]["applied"] and r[5]["ok"] and not r[5]["applied"] and r[5]["reason"] == "stale"
    assert r[5]["node"]["progress"] == 0.5
    status, tree, _ = await http("GET", f"{base}/status/_b.j")
    assert tree["progress"] == pytest.approx(0.75)


async def test_stale_single_post_says_so(server, http):
    base, _ = server
    await http("POST", f"{base}/status/_s.j.a", {"progress": 0.5, "ts": 10})
    status, node, _ = await http("POST", f"{base}/status/_s.j.a", {"progress": 0.2, "ts": 9})
    assert status == 200 and node["_applied"] is False and "stale" in node["_reason"] and node["progress"] == 0.5


async def test_delete(server, http):
    base, app = server
    await http("POST", f"{base}/status/_d.j.a.x", {"progress": 1})
    await http("POST", f"{base}/status/_d.j.b", {"progress": 0})
    status, body, resp = await http("DELETE", f"{base}/status/_d.j.a")
    assert status == 204 and body is None
    assert (await http("GET", f"{base}/status/_d.j.a.x"))[0] == 404
    assert (await http("GET", f"{base}/status/_d.j"))[1]["progress"] == 0
    assert (await http("DELETE", f"{base}/status/_d.j.a"))[0] == 404


async def test_namespaces_and_listing(server, http):
    base, _ = server
    for j in ("j1", "j2"):
        await http("POST", f"{base}/status/_portal.{j}.x", {"progress": 0.5})
    status, ns, _ = await http("GET", f"{base}/status/_portal?depth=2&order=recent")
    assert status == 200 and ns["namespace"] and ns["_children"] == ["_portal.j2", "_portal.j1"]
    assert [t["progress"] for t in ns["tasks"]] == [0.5, 0.5]
    status, top, _ = await http("GET", f"{base}/status")
    assert status == 200 and "_portal" in top["_children"]


async def test_paging_and_gzip(server, http):
    base, _ = server
    await http("POST", f"{base}/status", [{"key": f"_g.j.c{i}", "msg": "x" * 50} for i in range(50)])
    status, page, _ = await http("GET", f"{base}/status/_g.j?depth=2&limit=20")
    assert len(page["tasks"]) == 20 and page["_children_total"] == 50
    status, page2, _ = await http("GET", f"{base}/status/_g.j?depth=2&limit=20&cursor={page['_children_next']}")
    assert page2["_children"][0] == "_g.j.c20"
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    resp = await AsyncHTTPClient().fetch(HTTPRequest(f"{base}/status/_g.j?depth=2", headers={
        "Accept-Encoding": "gzip"}, decompress_response=False))
    assert resp.headers["Content-Encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(resp.body))["_children_total"] == 50


async def test_children_by_status_on_a_wide_node(server, http):
    base, _ = server
    await http("POST", f"{base}/status", [{"key": f"_w.j.c{i}", "progress": 0.5} for i in range(150)])
    failed = [3, 40, 41, 99, 120, 149]
    await http("POST", f"{base}/status", [{"key": f"_w.j.c{i}", "status": "failed"} for i in failed]
               + [{"key": "_w.j.c7", "status": "running"}])
    await http("POST", f"{base}/status/_w.j.c40", {"status": "running"})  # no longer failed
    want = [f"_w.j.c{i}" for i in failed if i != 40]
    got, cursor = [], ""
    while True:
        status, page, _ = await http("GET", f"{base}/status/_w.j?depth=2&status=failed&limit=2{cursor}")
        assert status == 200 and page["_children_total"] == 5 and page["_children_status"] == "failed"
        assert [t["key"] for t in page["tasks"]] == page["_children"]
        assert all(t["status"] == "failed" for t in page["tasks"])
        got += page["_children"]
        if "_children_next" not in page:
            break
        cursor = f"&cursor={page['_children_next']}"
    assert got == want
    status, page, _ = await http("GET", f"{base}/status/_w.j?status=running&limit=10")
    assert page["_children"] == ["_w.j.c7", "_w.j.c40"] and page["_status_counts"]["none"] == 143
    status, page, _ = await http("GET", f"{base}/status/_w.j?status=none&limit=3")
    assert page["_children"] == ["_w.j.c0", "_w.j.c1", "_w.j.c2"] and page["_children_total"] == 143
    status, page, _ = await http("GET", f"{base}/status/_w.j?status=canceled")
    assert status == 200 and page["_children"] == [] and page["_children_total"] == 0
    await http("DELETE", f"{base}/status/_w.j.c3")
    status, page, _ = await http("GET", f"{base}/status/_w.j?status=failed")
    assert page["_children"] == want[1:] and page["_children_total"] == 4


async def test_a_status_is_listed_exactly_as_it_was_set(server, http):
    """Control characters and spaces at the ends are part of a status: the query
    finds what the POST set, and not a status that differs only in them."""
    base, _ = server
    await http("POST", f"{base}/status", [{"key": "_e.j.a", "status": "\x05"}, {"key": "_e.j.b", "status": " "},
                                          {"key": "_e.j.c", "status": " x "}, {"key": "_e.j.d", "status": "x"}])
    for query, want in [("%05", ["_e.j.a"]), ("%20", ["_e.j.b"]), ("%20x%20", ["_e.j.c"]), ("x", ["_e.j.d"])]:
        status, page, _ = await http("GET", f"{base}/status/_e.j?status={query}")
        assert (status, page["_children"]) == (200, want), query
    status, page, _ = await http("GET", f"{base}/status/_e.j?status=%ff")
    assert status == 400 and page["error"]["code"] == "bad-status"


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/status/_x.j?status=", None, 400, "bad-status"),
    ("GET", "/status/_x.j?status=" + "x" * 65, None, 400, "bad-status"),
    ("GET", "/status/_x?status=failed", None, 400, "bad-status"),
    ("POST", "/status/_x.j", b"{not json", 400, "bad-json"),
    ("POST", "/status/_x.j", b"", 400, "bad-body"),
    ("POST", "/status/_x.j", b"[1]", 400, "bad-body"),
    ("POST", "/status/_x.j", b'{"progress": 2}', 400, "bad-progress"),
    ("POST", "/status/_x.j", b'{"progress": NaN}', 400, "bad-json"),
    ("POST", "/status/_x.j", b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}", 400, "value-too-deep"),
    ("POST", "/status/_x.j", b'{"x": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "value-too-deep"),
    ("POST", "/status/_x.j", b'{"weight": -1}', 400, "bad-weight"),
    ("POST", "/status/_x.j", b'{"status": 5}', 400, "bad-type"),
    ("POST", "/status/_x.j", b'{"_x": 5}', 400, "reserved-field"),
    ("POST", "/status/_x.j", b'{"eta": 5}', 400, "reserved-field"),
    ("POST", "/status/_x.j", b'{"key": "y"}', 400, "reserved-field"),
    ("POST", "/status/_x.j", orjson.dumps({f"f{i}": 1 for i in range(65)}), 400, "too-many-fields"),
    ("POST", "/status/_x.j", orjson.dumps({"msg": "x" * 9000}), 400, "value-too-long"),
    ("POST", "/status/_x", b'{"progress": 1}', 400, "namespace-key"),
    ("POST", "/status/a..b", b'{"progress": 1}', 400, "bad-key"),
    ("POST", "/status/a%20b", b'{"progress": 1}', 400, "bad-key"),
    ("POST", "/status/" + "x" * 300, b'{"progress": 1}', 400, "bad-key"),
    ("POST", "/status", b'{"key": "_x.j"}', 400, "bad-body"),
    ("GET", "/status/_x.j?depth=abc", None, 400, "bad-depth"),
    ("GET", "/status/_x.j?depth=99", None, 400, "bad-depth"),
    ("POST", "/status/_x.j", b'{"status": "none"}', 400, "bad-status"),
    ("GET", "/status/_x.j?depth=1_0", None, 400, "bad-depth"),
    ("GET", "/status/_x.j?stalled=%00", None, 400, "bad-stalled"),
    ("GET", "/status/_x.j?history=%00", None, 400, "bad-history"),
    ("GET", "/status/_x.j?depth=%D9%A2", None, 400, "bad-depth"),
    ("GET", "/status/_x.j?limit=0", None, 400, "bad-limit"),
    ("GET", "/status/_x.j?cursor=zz", None, 400, "bad-cursor"),
    ("GET", "/status/_x.j?cursor=1:2:3", None, 400, "bad-cursor"),
    ("GET", "/status/_x.j.none", None, 404, "not-found"),
    ("GET", "/nowhere", None, 404, "http-404"),
    ("PUT", "/status/_x.j", b"{}", 405, "http-405"),
    ("DELETE", "/status/_x", None, 400, "namespace-key"),
    ("DELETE", "/status", None, 405, "http-405"),
])
async def test_bad_input_gets_a_clear_error_and_changes_nothing(server, http, method, path, body, status, code):
    base, _ = server
    got, err, resp = await http(method, f"{base}{path}", body)
    assert got == status, err
    assert err["error"]["code"] == code and err["error"]["message"]
    assert resp.headers["Content-Type"] == "application/json"
    assert (await http("GET", f"{base}/status/_x.j"))[0] == 404  # nothing was written


async def test_body_too_large(server, http):
    base, app = server
    assert app.settings["engine"].limits.max_body_bytes == 4 * 1024 * 1024
    big = b'{"msg": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    status, err, _ = await http("POST", f"{base}/status/_big.j", big)
    assert status == 413 and err["error"]["code"] == "too-large"
    batch = orjson.dumps([{"key": f"_big.j.{i}"} for i in range(10_001)])
    status, err, _ = await http("POST", f"{base}/status", batch)
    assert status == 413 and err["error"]["code"] == "too-large"
    assert (await http("GET", f"{base}/status/_big.j"))[0] == 404


async def test_redis_unreachable_is_503(redis_url, prefix, http, tmp_path):
    """A private Redis that the test stops: reads and writes answer 503, health too."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from sca_progress.engine.embedded import EmbeddedRedis
    from sca_progress.server.app import make_app
    from sca_progress.server.settings import Settings

    private = EmbeddedRedis(tmp_path / "r")  # append-only: the data outlives the restart
    url = private.start()
    app = await make_app(Settings(redis_url=url, prefix=prefix))
    srv = HTTPServer(app)
    socks = bind_sockets(0, "127.0.0.1")
    srv.add_sockets(socks)
    base = f"http://127.0.0.1:{socks[0].getsockname()[1]}"
    try:
        assert (await http("POST", f"{base}/status/_r.j.a", {"progress": 1}))[0] == 200
        private.stop()
        for method, path, body in (("GET", "/status/_r.j", None), ("POST", "/status/_r.j.a", {"progress": 1}),
                                   ("POST", "/status", [{"key": "_r.j.b"}]), ("DELETE", "/status/_r.j.a", None),
                                   ("GET", "/health", None)):
            status, err, _ = await http(method, base + path, body)
            assert status == 503, (method, path, status, err)
        private.start()
        assert (await http("GET", f"{base}/status/_r.j"))[1]["progress"] == 1  # back by itself
        assert (await http("POST", f"{base}/status/_r.j.b", {"progress": 0}))[0] == 200  # scripts reloaded
    finally:
        srv.stop()
        await app.settings["service"].close()
        private.stop()


async def test_cross_site_writes_are_refused(server, http):
    base, _ = server
    status, body, _ = await http("POST", f"{base}/status/_cs.j.a", b'{"progress": 1}',
                                 {"Origin": "https://evil.example", "Content-Type": "text/plain"})
    assert status == 403 and "cross-origin" in body["error"]["message"]
    assert (await http("DELETE", f"{base}/status/_cs.j", None, {"Origin": "https://evil.example"}))[0] == 403
    assert (await http("GET", f"{base}/status/_cs.j.a"))[0] == 404  # nothing written
    assert (await http("POST", f"{base}/status/_cs.j.a", {"progress": 1}, {"Origin": base}))[0] == 200
    assert (await http("POST", f"{base}/status/_cs.j.b", {"progress": 1}))[0] == 200  # programs send no Origin


async def test_credentials_never_reach_the_access_log(server, http, caplog):
    import logging

    base, _ = server
    caplog.set_level(logging.DEBUG)
    await http("GET", f"{base}/events/a..b?ticket=sekrit1&x=1")
    await http("GET", f"{base}/nowhere?token=sekrit2")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ticket=[redacted]" in text and "token=[redacted]" in text and "sekrit" not in text


def test_script_failures_are_not_outages():
    from sca_progress.engine.errors import ScriptFailed, StorageUnavailable, from_script_error

    assert isinstance(from_script_error("ERR user_script:12: attempt to index a nil value"), ScriptFailed)
    assert from_script_error("ERR user_script:1: x").status == 500
    assert isinstance(from_script_error("LOADING Redis is loading the dataset in memory"), StorageUnavailable)
    assert from_script_error("ERR bad-progress _a.b").code == "bad-progress"


async def test_the_access_log_holds_errors_by_default(server, http, caplog):
    """--access-log errors (the default): a successful request leaves no line,
    an error answer does; "all" logs every request (see server/app.py)."""
    import logging

    from sca_progress.server.logs import request_logger

    base, app = server
    caplog.set_level(logging.INFO, logger="tornado.access")
    assert (await http("POST", f"{base}/status/_al.j.a", {"progress": 1}))[0] == 200
    assert (await http("GET", f"{base}/status/_al.nope"))[0] == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(lines) == 1 and lines[0].startswith("404 GET /status/_al.nope")
    app.settings["log_function"] = request_logger("all", app.settings["service"].metrics)
    caplog.clear()
    assert (await http("POST", f"{base}/status/_al.j.a", {"progress": 1}))[0] == 200
    assert [r.getMessage()[:27] for r in caplog.records if r.name == "tornado.access"] == ["200 POST /status/_al.j.a (1"]


async def test_a_burst_opens_few_redis_connections(server, http, redis_client):
    """Reads and writes share the engine's one connection, and the rest of the
    service uses a bounded pool: a burst of 300 concurrent requests leaves a
    handful of connections, not one per request."""
    import asyncio

    from sca_progress.server.service import REDIS_POOL_SIZE

    base, app = server
    await http("POST", f"{base}/status/_burst.j.a", {"progress": 0.5})
    before = len(await redis_client.client_list())
    await asyncio.gather(*(http("POST" if i % 2 else "GET", f"{base}/status/_burst.j.a",
                                {"progress": 0.5} if i % 2 else None) for i in range(300)))
    await asyncio.gather(*(http("GET", f"{base}/health") for _ in range(100)))
    assert len(await redis_client.client_list()) - before <= REDIS_POOL_SIZE


async def test_the_hot_route_answers_as_the_request_handler_does(server, http, monkeypatch):
    """A plain POST /status/<key> takes server/hot_post.py; one with an Origin
    (here the service's own) takes NodeHandler.  Both answer the same: bodies,
    statuses, error codes and headers."""
    from sca_progress.server import hot_post

    base, app = server
    taken = []
    monkeypatch.setattr(hot_post.UpdateDelegate, "finish",
                        lambda self, f=hot_post.UpdateDelegate.finish: (taken.append(self.key), f(self))[1])
    cases = [
        ("_hot.j.a", {"progress": 0.25, "msg": "one", "weight": 2, "custom": {"x": [1, 2]}}),
        ("_hot.j.a", {"progress": 0.5, "ts": 10}),
        ("_hot.j.a", {"progress": 0.1, "ts": 5}),             # stale: read back, _applied false
        ("_hot.j.b", b"{not json"),
        ("_hot.j.b", b""),
        ("_hot.j.b", [1, 2]),
        ("_hot.j.b", {"progress": 2}),
        ("_hot..bad", {"progress": 0.5}),
        ("_hot", {"progress": 0.5}),                          # a namespace cannot be written
        ("_hot.j.c", {"_reserved": 1}),
    ]
    for key, body in cases:
        answers = []
        for headers in ({}, {"Origin": base}):
            status, data, resp = await http("POST", f"{base}/status/{key}", body, headers=headers)
            if isinstance(data, dict):
                data.pop("_now", None)
                for t in ("update_time", "start_time", "run_time", "eta"):
                    data.pop(t, None)
            answers.append((status, data, resp.headers.get("Content-Type"), resp.headers.get("Cache-Control"),
                            resp.headers.get("Server"), bool(resp.headers.get("X-Request-Id"))))
        assert answers[0] == answers[1], (key, body)
    assert taken == [key for key, _ in cases]  # the plain requests all took the hot route
    status, _, resp = await http("POST", f"{base}/status/_hot.j.d", {"progress": 1},
                                 headers={"X-Request-Id": "job-42.attempt:1"})
    assert status == 200 and resp.headers["X-Request-Id"] == "job-42.attempt:1"
    assert resp.headers["Date"].endswith(" GMT")


async def test_a_ts_far_ahead_of_the_clock_is_refused_and_minus_zero_is_zero(server, http):
    """A ts in µs (or 1e300) would make every later true ts stale for ever:
    more than a day ahead of the server's clock, it is refused."""
    base, _ = server
    now = time.time() * 1000
    for ts in (1e300, now * 1000, now + 2 * 86_400_000):
        status, body, _ = await http("POST", f"{base}/status/_ts.j.a", {"progress": 0.1, "ts": ts})
        assert status == 400 and body["error"]["code"] == "bad-ts", (ts, body)
        status, body, _ = await http("POST", f"{base}/status", [{"key": "_ts.j.a", "progress": 0.1, "ts": ts}])
        assert status == 200 and body["results"][0]["error"]["code"] == "bad-ts", body
    status, body, _ = await http("POST", f"{base}/status/_ts.j.a", {"progress": -0.0, "ts": now + 3_600_000})
    assert status == 200 and body["_applied"] and body["progress"] == 0 and repr(body["progress"]) == "0.0"
    status, body, _ = await http("POST", f"{base}/status/_ts.j.a", {"progress": 0.5, "ts": now})
    assert status == 200 and not body["_applied"]  # an hour's skew still orders updates
    status, body, _ = await http("POST", f"{base}/status/_ts.j.a", {"progress": True})
    assert status == 400 and body["error"]["message"].endswith("not true")
    status, body, _ = await http("GET", f"{base}/status/_ts.j?stalled=1&history=2")
    assert status == 400 and body["error"]["code"] == "bad-history"
