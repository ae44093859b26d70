"""uvicorn's HTTP protocol, with each response's head sent in the same write as its body.

uvicorn writes a response's status line and headers as soon as the app starts the
response, and its body in a second write. Each write to a socket is a system call,
and on the loopback interface every services' hop uses, the sender's call also runs
the receiver's side of TCP: two segments, two wake-ups of the reading process, two
reads, for every answer of every hop. Here the head is held until the next write (the
body, nearly always at once) and goes out with it; if none comes within the event
loop's turn, it goes out alone. Nothing is reordered or lost: held bytes always leave
before any written after them, and before the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

# A response head as uvicorn writes it: the status line through the blank line.
_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"


class HeadWithBody:
    """A transport that holds a response head back for the write that follows it."""

    __slots__ = ("_flush", "_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            self._transport.write(head + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(_HEAD_START) and data.endswith(_HEAD_END):
            self._head = data
            self._flush = self._loop.call_soon(self.send_held)
            return
        self._transport.write(data)

    def send_held(self) -> None:
        """Send a head still held, alone."""
        self._flush = None
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self.send_held()
        self._transport.write_eof()

    def close(self) -> None:
        self.send_held()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def http_protocol() -> Any:
    """The protocol class for uvicorn's ``http`` option: httptools' with
    :class:`HeadWithBody`, or uvicorn's own choice where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
        return "auto"

    class HeadWithBodyProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # Duck-typed: every call but the writes reaches the transport itself.
            super().connection_made(cast(asyncio.Transport, HeadWithBody(transport, self.loop)))

    return HeadWithBodyProtocol
