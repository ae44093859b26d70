"""The floor: a bare ASGI app answering a small JSON body, served like Panthera serves.

``python bench/hello.py --port 9000`` serves it with uvicorn and the same options as
``panthera run`` / ``panthera serve`` (httptools and uvloop when installed, no log
config, no access log, no server header), so anything Panthera costs above this is
the framework, middleware and the work of the request itself.
"""

from __future__ import annotations

import argparse
from typing import Any

BODY = b'{"message":"hello","ok":true}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with ``BODY``; accept the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Read (and drop) the request body so keep-alive connections stay in sync.
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()

    import uvicorn

    # The options of panthera.cli._serve, log level as the bench runs Panthera.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=20,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
