"""The gateway's hop over HTTP passes the client's request and the service's answer
through as they are, and streams the answer rather than reading it first."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from starlette.types import Message, Scope

from panthera.gateway.upstreams import HttpUpstream

BODY = gzip.compress(b'{"ok":true}' * 1000)


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        response = web.StreamResponse(
            headers={"content-encoding": "gzip", "content-type": "application/json"}
        )
        await response.prepare(request)
        half = len(BODY) // 2
        await response.write(BODY[:half])
        # The second half comes later: the first must already be on its way.
        await asyncio.sleep(0.2)
        await response.write(BODY[half:])
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_the_hop_adds_nothing_decodes_nothing_and_streams(
    service: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = service
    upstream = HttpUpstream(url, timeout_seconds=5, retries=0)
    sent: list[Message] = []
    loop = asyncio.get_running_loop()
    arrived: list[float] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message["body"]:
            arrived.append(loop.time())

    scope: Scope = {"type": "http", "method": "GET", "query_string": b"a=1"}
    try:
        await upstream.forward(scope, receive, send, path="/x", headers=[(b"x-request-id", b"r-1")])
    finally:
        await upstream.close()
    assert sent[0]["status"] == 200
    assert (b"content-encoding", b"gzip") in sent[0]["headers"]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == BODY
    assert arrived[-1] - arrived[0] >= 0.15  # the first part was sent before the last came
    assert seen[0]["x-request-id"] == "r-1"
    assert not {"user-agent", "accept", "accept-encoding"} & seen[0].keys()
