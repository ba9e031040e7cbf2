"""Bearer-token auth on REST, socket.io and SSE: the whole matrix, with real tokens."""
from __future__ import annotations

import asyncio
import logging
import time

import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tornado.netutil import bind_sockets

from sca_progress.server.app import http_server, make_app
from sca_progress.server.settings import Settings

from .feed_clients import SioClient, SseReader

SECRET = "a-long-test-secret-of-at-least-32-bytes!"


def token(scope: str = "", *, exp: float = 300, key=SECRET, alg: str = "HS256", **claims) -> str:
    payload = {"sub": "tester", "exp": int(time.time() + exp), "scope": scope, **claims}
    return jwt.encode(payload, key, algorithm=alg)


def forge_hs256(payload: dict, secret: bytes) -> str:
    """An HS256 token signed with arbitrary bytes (PyJWT refuses to sign with a
    PEM public key: the classic key-confusion attack the server must refuse)."""
    import base64
    import hashlib
    import hmac

    import orjson

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + b"." + b64(orjson.dumps(payload))
    return (signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode()


def auth(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


async def running(settings: Settings):
    app = await make_app(settings)
    http = http_server(app)
    socks = bind_sockets(0, "127.0.0.1")
    http.add_sockets(socks)
    return f"http://127.0.0.1:{socks[0].getsockname()[1]}", app, http


async def stopping(app, http):
    http.stop()
    await app.settings["service"].close_feeds()
    await asyncio.wait_for(http.close_all_connections(), 10)
    await app.settings["service"].close()


@pytest.fixture
async def secured(redis_url, prefix):
    base, app, http = await running(Settings(redis_url=redis_url, prefix=prefix, jwt_secret=SECRET,
                                             rate_limit=50, cors_origins="https://ui.example"))
    yield base, app
    await stopping(app, http)


ADMIN = token("admin")


async def test_rest_matrix(secured, http):
    base, _ = secured
    assert (await http("POST", f"{base}/status/_portal.job1.a", {"progress": 0.5}, auth(ADMIN)))[0] == 200
    assert (await http("POST", f"{base}/status/_portal.job10.a", {"progress": 0.5}, auth(ADMIN)))[0] == 200
    url = f"{base}/status/_portal.job1"
    cases = [
        ({}, 401),  # no token
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (auth(token("read:_portal.job1", key="another-secret-of-at-least-32-bytes")), 401),  # bad signature
        (auth(token("read:_portal.job1", exp=-60)), 401),  # expired
        (auth(token("read:_portal.job1", nbf=int(time.time()) + 600)), 401),  # not valid yet
        (auth(jwt.encode({"exp": int(time.time()) + 60, "scope": "read:*"}, None, algorithm="none")), 401),
        (auth(jwt.encode({"scope": "read:*"}, SECRET, algorithm="HS256")), 401),  # no exp
        (auth(jwt.encode({"exp": str(int(time.time()) + 60), "scope": "read:*"}, SECRET)), 401),  # exp a string
        (auth(token("read:*", nbf=str(int(time.time()) - 60))), 401),  # nbf a string
        (auth(token("read:*", exp=-3)), 200),  # expired 3 s ago: within the 5 s leeway for clock skew
        (auth(token("read:*", exp=-8)), 401),  # expired 8 s ago: beyond it
        (auth(token("read:_portal.job2")), 403),  # out of scope
        (auth(token("read:_portal.job10")), 403),  # a look-alike prefix is not a parent
        (auth(token("write:_portal.job1")), 403),  # write is not read
        (auth(token("read:_portal.job1")), 200),
        (auth(token("read:_portal")), 200),  # a parent prefix
        (auth(token("read:*")), 200),
        (auth(ADMIN), 200),
    ]
    for headers, status in cases:
        got, body, resp = await http("GET", url, None, headers)
        assert got == status, (headers, got, body)
        if status == 401:
            assert body["error"]["code"] == "unauthorized" and resp.headers["WWW-Authenticate"].startswith("Bearer")
        if status == 403:
            assert body["error"]["code"] == "forbidden"
    got, _, _ = await http("GET", f"{base}/status/_portal.job10", None, auth(token("read:_portal.job1")))
    assert got == 403
    # The top level needs read:* (or admin).
    assert (await http("GET", f"{base}/status", None, auth(token("read:_portal"))))[0] == 403
    assert (await http("GET", f"{base}/status", None, auth(token("read:*"))))[0] == 200


async def test_writes_deletes_and_public_routes(secured, http):
    base, _ = secured
    writer = auth(token("write:_w.job1"))
    assert (await http("POST", f"{base}/status/_w.job1.a", {"progress": 1}, writer))[0] == 200
    assert (await http("POST", f"{base}/status/_w.job10.a", {"progress": 1}, writer))[0] == 403
    status, body, _ = await http("POST", f"{base}/status", [{"key": "_w.job1.b", "progress": 1},
                                                            {"key": "_w.job2.b", "progress": 1}], writer)
    assert status == 200
    assert body["results"][0]["ok"] and body["results"][1]["error"]["code"] == "forbidden"
    assert (await http("GET", f"{base}/status/_w.job2.b", None, auth(ADMIN)))[0] == 404  # nothing written
    assert (await http("DELETE", f"{base}/status/_w.job1.a", None, writer))[0] == 403  # needs admin
    assert (await http("DELETE", f"{base}/status/_w.job1.a", None, auth(ADMIN)))[0] == 204
    assert (await http("GET", f"{base}/health"))[0] == 200
    assert (await http("GET", f"{base}/openapi.json"))[0] == 200


async def test_rate_limit_per_token(secured, http):
    base, _ = secured
    writer = auth(token("write:_rl", jti="rate-test"))
    other = auth(token("write:_rl", jti="another"))
    batch = [{"key": f"_rl.job.{i}", "progress": 0.5} for i in range(30)]
    while time.time() % 1 > 0.7:  # stay inside one one-second window
        await asyncio.sleep(0.05)
    assert (await http("POST", f"{base}/status", batch, writer))[0] == 200
    status, body, resp = await http("POST", f"{base}/status", batch, writer)
    assert status == 429 and body["error"]["code"] == "rate-limited" and resp.headers["Retry-After"] == "1"
    assert (await http("POST", f"{base}/status", batch, other))[0] == 200  # tokens have their own budget
    await asyncio.sleep(1.1)
    assert (await http("POST", f"{base}/status", batch, writer))[0] == 200


async def test_cors(secured, http):
    base, _ = secured
    _, _, resp = await http("GET", f"{base}/health", None, {"Origin": "https://ui.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    _, _, resp = await http("GET", f"{base}/health", None, {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    status, _, resp = await http("OPTIONS", f"{base}/status/_c.job", None, {
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
    assert status == 204 and "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "X-Request-Id" in resp.headers["Access-Control-Allow-Headers"]
    assert "X-Request-Id" in resp.headers["Access-Control-Expose-Headers"]
    # A read answer varies by Origin (its CORS header) and by Accept-Encoding (gzip): a cache must know both.
    reader = {"Origin": "https://ui.example", "Authorization": f"Bearer {token('read:*')}"}
    status, _, resp = await http("GET", f"{base}/status", None, reader)
    vary = {v.strip() for line in resp.headers.get_list("Vary") for v in line.split(",")}
    assert status == 200 and {"Origin", "Accept-Encoding"} <= vary, resp.headers


async def test_socketio_matrix(secured, http):
    base, _ = secured
    for bad in (None, "garbage", token("read:*", exp=-10), token("read:*", key="x" * 40)):
        c = socketio.AsyncClient(reconnection=False)
        refusals = []
        c.on("connect_error", refusals.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await c.connect(base, transports=["websocket"], auth={"token": bad} if bad else None, wait_timeout=5)
        # a message to show, and the error as every other route gives it
        assert refusals and refusals[0]["data"]["code"] == "unauthorized", refusals
        assert refusals[0]["message"] == refusals[0]["data"]["message"]
    c = await SioClient().connect(base, auth={"token": token("read:_sio.job1")})
    try:
        assert (await c.subscribe("_sio.job1"))["key"] == "_sio.job1"
        for key in ("_sio.job10", "_sio", "_other.job"):
            await c.client.emit("subscribe", key)
            err = await c.expect("error")
            assert err["code"] == "forbidden", key
    finally:
        await c.close()
    # The query parameter is the fallback for clients that cannot send an auth payload.
    c = SioClient()
    await c.client.connect(f"{base}?token={token('read:_sio')}", transports=["websocket"], wait_timeout=5)
    try:
        assert (await c.subscribe("_sio.job1"))["key"] == "_sio.job1"
    finally:
        await c.close()


async def test_socket_dropped_when_its_token_expires(secured):
    base, _ = secured
    c = await SioClient().connect(base, auth={"token": token("read:*", exp=1.5)})
    await c.subscribe("_exp.job")
    err = await c.expect("error", timeout=10)
    assert err["code"] == "unauthorized"
    for _ in range(50):
        if not c.client.connected:
            break
        await asyncio.sleep(0.1)
    assert not c.client.connected


async def test_sse_tickets(secured, http):
    base, _ = secured
    await http("POST", f"{base}/status/_sse.job1.a", {"progress": 0.3}, auth(ADMIN))
    assert (await http("GET", f"{base}/events/_sse.job1"))[0] == 401
    assert (await http("POST", f"{base}/auth/ticket"))[0] == 401
    status, body, _ = await http("POST", f"{base}/auth/ticket", b"", auth(token("read:_sse.job1")))
    assert status == 200 and body["expires_in"] == 60
    ticket = body["ticket"]
    reader = SseReader(f"{base}/events/_sse.job1?ticket={ticket}").start()
    try:
        _, snap = await reader.expect("snapshot")
        assert snap["node"]["progress"] == 0.3
    finally:
        reader.close()
    status, body, _ = await http("GET", f"{base}/events/_sse.job1?ticket={ticket}")  # used up
    assert status == 401 and "ticket" in body["error"]["message"]
    _, body, _ = await http("POST", f"{base}/auth/ticket", b"", auth(token("read:_sse.job1")))
    assert (await http("GET", f"{base}/events/_sse.job10?ticket={body['ticket']}"))[0] == 403
    # Non-browser clients may send the header instead.
    reader = SseReader(f"{base}/events/_sse.job1", auth(token("read:_sse"))).start()
    try:
        await reader.expect("snapshot")
    finally:
        reader.close()


async def test_sse_stream_ends_when_the_token_expires(secured, http):
    base, _ = secured
    _, body, _ = await http("POST", f"{base}/auth/ticket", b"", auth(token("read:*", exp=1.5)))
    reader = SseReader(f"{base}/events/_sse.exp?ticket={body['ticket']}").start()
    try:
        await reader.expect("snapshot")
        _, err = await reader.expect("error", timeout=10)
        assert err["code"] == "unauthorized"
        await asyncio.wait_for(reader.task, 10)  # the server ended the stream
    finally:
        reader.close()


def _pem_pair(kind: str):
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS256" \
        else ec.generate_private_key(ec.SECP256R1())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_public_key_tokens_issuer_and_audience(redis_url, prefix, http, tmp_path, alg):
    priv, pub = _pem_pair(alg)
    (tmp_path / "pub.pem").write_bytes(pub)
    base, app, srv = await running(Settings(redis_url=redis_url, prefix=prefix, jwt_public_key=str(tmp_path / "pub.pem"),
                                            jwt_issuer="https://issuer.example", jwt_audience="progress"))
    try:
        good = token("admin", key=priv, alg=alg, iss="https://issuer.example", aud="progress")
        assert (await http("POST", f"{base}/status/_pk.job.a", {"progress": 1}, auth(good)))[0] == 200
        for bad in (token("admin", key=priv, alg=alg, iss="https://other.example", aud="progress"),
                    token("admin", key=priv, alg=alg, iss="https://issuer.example", aud="someone-else"),
                    token("admin", key=priv, alg=alg, aud="progress"),  # no iss
                    token("admin", key=SECRET, alg="HS256", iss="https://issuer.example", aud="progress"),
                    forge_hs256({"exp": int(time.time()) + 60, "scope": "admin", "iss": "https://issuer.example",
                                 "aud": "progress"}, pub)):
            assert (await http("GET", f"{base}/status/_pk.job", None, auth(bad)))[0] == 401
    finally:
        await stopping(app, srv)


async def test_warning_when_open_on_a_public_address(redis_url, prefix, caplog):
    caplog.set_level(logging.WARNING, logger="sca_progress.service")
    base, app, srv = await running(Settings(redis_url=redis_url, prefix=prefix, host="0.0.0.0"))
    await stopping(app, srv)
    assert any("auth is off" in r.message for r in caplog.records)
    caplog.clear()
    base, app, srv = await running(Settings(redis_url=redis_url, prefix=prefix, host="127.0.0.1"))
    await stopping(app, srv)
    assert not any("auth is off" in r.message for r in caplog.records)
