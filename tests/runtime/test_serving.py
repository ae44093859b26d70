"""Responses leave in one write, head and body together, and nothing is lost or reordered."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from panthera.runtime.serving import HeadWithBody, http_protocol

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def test_a_head_goes_out_with_the_body_written_after_it() -> None:
    recording = Recording()
    transport = HeadWithBody(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    assert recording.writes == []
    transport.write(b"ok")
    assert recording.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert recording.writes == [HEAD + b"ok"]


async def test_a_head_with_no_body_after_it_goes_out_alone_at_the_next_turn() -> None:
    recording = Recording()
    transport = HeadWithBody(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert recording.writes == [HEAD]
    transport.write(b"ok")
    assert recording.writes == [HEAD, b"ok"]


async def test_closing_sends_a_held_head_first_and_aborting_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closed, aborted = Recording(), Recording()
    first = HeadWithBody(closed, loop)  # type: ignore[arg-type]
    first.write(HEAD)
    first.close()
    assert (closed.writes, closed.closed) == ([HEAD], True)
    second = HeadWithBody(aborted, loop)  # type: ignore[arg-type]
    second.write(HEAD)
    second.abort()
    await asyncio.sleep(0)
    assert (aborted.writes, aborted.aborted) == ([], True)


async def test_other_writes_pass_through_and_the_rest_is_the_transports() -> None:
    recording = Recording()
    transport = HeadWithBody(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"chunk")
    transport.writelines([b"a", b"b"])
    assert recording.writes == [b"chunk", b"ab"]
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)


async def _stream() -> AsyncIterator[bytes]:
    for part in (b"one,", b"two,", b"three"):
        await asyncio.sleep(0.01)
        yield part


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/text", lambda request: PlainTextResponse("hello")),
        Route("/empty", lambda request: Response(status_code=204)),
        Route("/stream", lambda request: StreamingResponse(_stream())),
        Route("/echo", _echo, methods=["POST"]),
    ]
)


@pytest.fixture
async def served() -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        APP, host="127.0.0.1", port=port, http=http_protocol(), log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_uvicorn_serves_every_kind_of_response_through_it(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        for _ in range(3):  # one kept-alive connection, answer after answer
            text = await client.get("/text")
            assert (text.status_code, text.text) == (200, "hello")
            empty = await client.get("/empty")
            assert (empty.status_code, empty.content) == (204, b"")
            head = await client.head("/text")
            assert (head.status_code, head.content) == (200, b"")
            streamed = await client.get("/stream")
            assert streamed.text == "one,two,three"
            body = bytes(range(256)) * 1000
            echoed = await client.post("/echo", content=body, headers={"Expect": "100-continue"})
            assert echoed.content == body
