"""aiohttp and httpx client integrations against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid

import pytest

aiohttp = pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
from aiohttp import web  # noqa: E402

from autoperf import integrations, spans, testing  # noqa: E402
from autoperf.integrations import aiohttp as ahttp  # noqa: E402

pytestmark = pytest.mark.usefixtures("autoperf_pipeline")

SECRET = "tok-" + uuid.uuid4().hex
BODY = b'{"id": 12345, "name": "bob"}'


@pytest.fixture(scope="module")
def server():
    """A real aiohttp.web server in its own thread; yields its base URL."""
    seen = []

    async def user(request):
        seen.append(dict(request.headers))
        return web.Response(body=BODY, content_type="application/json")

    async def fail(request):
        return web.Response(status=503, text="down")

    async def redirect(request):
        raise web.HTTPFound("/users/1")

    async def hook(request):
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    app.router.add_post("/fail", fail)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/api/webhooks/{id}/{token}", hook)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", seen
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


@pytest.fixture
def patched():
    for name in ("aiohttp", "httpx"):
        integrations.unpatch(name)
    assert integrations.patch("aiohttp", aiohttp, {})
    assert integrations.patch("httpx", httpx, {})
    yield
    for name in ("aiohttp", "httpx"):
        integrations.unpatch(name)


def http_spans(records):
    return [r for r in records if r.get("type") == "span" and r["kind"] == "http"]


def assert_private(records):
    dumped = json.dumps(records)
    assert SECRET not in dumped and "token=" not in dumped and "Bearer" not in dumped
    assert "hunter2" not in dumped


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestAiohttp:
    def test_get_records_safe_attributes(self, server, patched):
        """A GET records method, host, templated path without query, status and bytes; never secrets."""
        base, seen = server
        url = base + f"/users/12345?token={SECRET}"
        with_userinfo = base.replace("http://", "http://bob:hunter2@") + "/users/1"

        async def main():
            async with aiohttp.ClientSession() as session:
                with testing.capture_records() as records:
                    with spans.span("queue_command", "flow") as flow:
                        async with session.get(url, headers={"Authorization": f"Bearer {SECRET}"},
                                               params={"also": SECRET}) as resp:
                            body = await resp.read()
                        async with session.get(with_userinfo) as resp:
                            assert await resp.read() == BODY
                return records, body, flow

        records, body, flow = asyncio.run(main())
        assert body == BODY and f"Bearer {SECRET}" in [h.get("Authorization") for h in seen]
        s, s2 = http_spans(records)
        host = base.removeprefix("http://")
        assert s["name"] == "GET /users/{id}" and s2["name"] == "GET /users/{id}"
        assert s["attrs"] == {"method": "GET", "host": host, "path": "/users/{id}", "status": 200,
                              "bytes": len(BODY)}
        assert s["parent_id"] == f"{flow.span_id:016x}" and s["status"] == "success"
        assert "bob" not in json.dumps(records)
        assert_private(records)

    def test_server_error_and_connection_error(self, server, patched):
        """A 5xx response marks the span error; a refused connection records the exception type."""
        base, _ = server

        async def main():
            async with aiohttp.ClientSession() as session:
                with testing.capture_records() as records:
                    async with session.post(base + "/fail", data=SECRET) as resp:
                        assert resp.status == 503
                    with pytest.raises(aiohttp.ClientConnectorError):
                        await session.get(f"http://127.0.0.1:{closed_port()}/x?key={SECRET}")
                return records

        records = asyncio.run(main())
        fail, refused = http_spans(records)
        assert fail["status"] == "error" and fail["attrs"]["status"] == 503 and fail["attrs"]["method"] == "POST"
        assert refused["status"] == "error" and "ClientConnectorError" in refused["error"]
        assert refused["attrs"]["path"] == "/x" and "status" not in refused["attrs"]
        assert_private(records)

    def test_secret_looking_path_segments_are_templated(self, server, patched):
        """Webhook ids and tokens in the path are replaced by placeholders."""
        base, _ = server
        token = "aB3" + SECRET.replace("-", "") + "Zz9_-x"

        async def main():
            async with aiohttp.ClientSession() as session:
                with testing.capture_records() as records:
                    async with session.post(f"{base}/api/webhooks/112233445566778899/{token}",
                                            json={"content": SECRET}) as resp:
                        assert resp.status == 204
                return records

        records = asyncio.run(main())
        (s,) = http_spans(records)
        assert s["attrs"]["path"] == "/api/webhooks/{id}/{token}"
        assert token not in json.dumps(records)
        assert_private(records)

    def test_suppressed_inside_a_more_specific_http_span(self, server, patched):
        """Inside a current http span (e.g. discord's route span) or ``suppress()`` no generic span is made."""
        base, _ = server

        async def main():
            async with aiohttp.ClientSession() as session:
                with testing.capture_records() as records:
                    with spans.span("POST /channels/{channel_id}/messages", "http") as route:
                        route.set("route", "/channels/{channel_id}/messages")
                        async with session.get(base + "/users/1") as resp:
                            await resp.read()
                    with ahttp.suppress():
                        async with session.get(base + "/users/2") as resp:
                            await resp.read()
                    async with session.get(base + "/users/3") as resp:
                        await resp.read()
                return records

        names = [s["name"] for s in http_spans(asyncio.run(main()))]
        assert names == ["POST /channels/{channel_id}/messages", names[-1]] and names[-1].startswith("GET ")
        assert len(names) == 2

    def test_patch_unpatch_patch(self, server, patched):
        """unpatch restores the original ``_request``; patching again records exactly once per request."""
        base, _ = server
        patched_fn = vars(aiohttp.ClientSession)["_request"]

        async def one():
            async with aiohttp.ClientSession() as session:
                with testing.capture_records() as records:
                    async with session.get(base + "/users/7") as resp:
                        assert await resp.read() == BODY
                return http_spans(records)

        assert len(asyncio.run(one())) == 1
        integrations.unpatch("aiohttp")
        original = vars(aiohttp.ClientSession)["_request"]
        assert original is not patched_fn and original is patched_fn.__wrapped__
        assert asyncio.run(one()) == []
        assert integrations.patch("aiohttp", aiohttp, {})
        assert len(asyncio.run(one())) == 1


class TestHttpx:
    def test_sync_client(self, server, patched):
        """``httpx.Client`` requests record one span each, redirects included, no query strings."""
        base, _ = server
        with testing.capture_records() as records:
            with httpx.Client(headers={"Authorization": f"Bearer {SECRET}"}) as client:
                r = client.get(base + f"/users/42?token={SECRET}")
                assert r.content == BODY
                r = client.get(base + "/redirect", follow_redirects=True)
                assert r.status_code == 200 and r.content == BODY
        first, redirected = http_spans(records)
        host = base.removeprefix("http://")
        assert first["name"] == "GET /users/{id}"
        assert first["attrs"] == {"method": "GET", "host": host, "path": "/users/{id}", "status": 200,
                                  "bytes": len(BODY)}
        assert redirected["attrs"]["path"] == "/redirect" and redirected["attrs"]["status"] == 200
        assert_private(records)

    def test_async_client_and_errors(self, server, patched):
        """``httpx.AsyncClient`` records spans; 5xx and connection errors mark them failed."""
        base, _ = server

        async def main():
            with testing.capture_records() as records:
                async with httpx.AsyncClient() as client:
                    with spans.span("flow", "flow") as flow:
                        r = await client.get(base + "/users/5", params={"k": SECRET})
                        assert r.content == BODY
                    r = await client.post(base + "/fail", content=SECRET)
                    assert r.status_code == 503
                    with pytest.raises(httpx.ConnectError):
                        await client.get(f"http://127.0.0.1:{closed_port()}/x")
            return records, flow

        records, flow = asyncio.run(main())
        ok, fail, refused = http_spans(records)
        assert ok["parent_id"] == f"{flow.span_id:016x}" and ok["attrs"]["bytes"] == len(BODY)
        assert fail["status"] == "error" and fail["attrs"]["status"] == 503
        assert refused["status"] == "error" and refused["error"] == "httpx.ConnectError"
        assert_private(records)

    def test_unpatch_restores_send(self, patched):
        """unpatch puts back the exact original ``send`` methods."""
        wrapped = vars(httpx.Client)["send"], vars(httpx.AsyncClient)["send"]
        integrations.unpatch("httpx")
        assert vars(httpx.Client)["send"] is wrapped[0].__wrapped__
        assert vars(httpx.AsyncClient)["send"] is wrapped[1].__wrapped__


@pytest.mark.parametrize("path, expected", [
    ("/users/123/repos", "/users/{id}/repos"),
    ("/a/550e8400-e29b-41d4-a716-446655440000", "/a/{uuid}"),
    ("/api/webhooks/1234/abcDEF123ghiJKL456mno", "/api/webhooks/{id}/{token}"),
    ("/objects/deadbeefdeadbeef00", "/objects/{hex}"),
    ("/search;jsessionid=abc?q=secret#frag", "/search"),
    ("/mail/bob@example.com", "/mail/{value}"),
    ("", "/"),
    ("/plain/path", "/plain/path"),
])
def test_template_path(path, expected):
    """Paths lose query/fragment/params and id- or secret-looking segments."""
    assert ahttp.template_path(path) == expected
