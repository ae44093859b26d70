"""A service process told to stop (SIGTERM, what ``panthera up``, compose and
Kubernetes send) finishes the request it is answering before it exits.

The process serves a small ASGI app through ``panthera.cli._serve``, the same
server options ``panthera serve`` runs every service with, so a slow request can
be held open at will.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

WAIT = 15.0
BODY = b"x" * 200_000

SERVER = """
import asyncio, sys
from pathlib import Path
from panthera.cli import _serve

started = Path(sys.argv[2])

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": message["type"] + ".complete"})
            if kind == "shutdown":
                return
    if scope["path"] == "/slow":
        started.touch()
        await asyncio.sleep(2.0)
    body = b"x" * 200_000 if scope["path"] == "/slow" else b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    # In pieces, so a server that stopped half way would show a short body.
    for start in range(0, len(body), 50_000):
        await send({"type": "http.response.body", "body": body[start:start + 50_000],
                    "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b""})

_serve(app, "127.0.0.1", int(sys.argv[1]), "warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str, timeout: float = WAIT) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    started = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(started)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                assert get(port, "/", timeout=1.0) == (200, b"ok")
                break
            except OSError:
                assert process.poll() is None, "the server exited before it was ready"
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)

        answers: list[tuple[int, bytes]] = []
        errors: list[BaseException] = []

        def slow() -> None:
            try:
                answers.append(get(port, "/slow"))
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        client = threading.Thread(target=slow)
        client.start()
        deadline = time.monotonic() + WAIT
        while not started.exists():
            assert time.monotonic() < deadline, "the slow request never reached the app"
            time.sleep(0.02)

        process.send_signal(signal.SIGTERM)
        # Stopping: no new connections while the one in flight is finished.
        time.sleep(0.5)
        assert process.poll() is None, "the server exited with a request in flight"
        with pytest.raises(ConnectionError):
            get(port, "/", timeout=1.0)

        client.join(WAIT)
        assert not client.is_alive()
        assert not errors, errors
        assert answers == [(200, BODY)]
        # After a clean shutdown the server re-raises the signal it caught, so the
        # parent sees the usual status of a process stopped by SIGTERM.
        assert process.wait(WAIT) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
