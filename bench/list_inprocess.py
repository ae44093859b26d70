"""CPU per request of one embedded-shape GET, in process, without a server.

For A/B work on the request path: the platform's ASGI app is called directly, so
the figure is the gateway's and the service's own work (middleware, routing,
handler, database read) without uvicorn's parsing and writing. CPU time of the
process, the least of ``--repeats`` runs of ``--requests`` each: on a shared
machine that moves far less than wall time.

    panthera seed --products 1000 --data-dir /tmp/shop
    .venv/bin/python bench/list_inprocess.py /tmp/shop "/api/v1/products?limit=20"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

HUGE = str(10**9)


async def measure(data_dir: str, target: str, requests: int, repeats: int) -> list[float]:
    from panthera.cli import _settings
    from panthera.runtime.apps import embedded_app

    app = embedded_app(_settings(data_dir))
    path, _, query = target.partition("?")
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
        }

    runs = []
    async with app.router.lifespan_context(app):
        for _ in range(300):  # warm caches, compiled statements, connections
            await app(scope(), receive, send)
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(requests):
                await app(scope(), receive, send)
            runs.append((time.process_time() - started) / requests * 1000)
    if statuses != {200}:
        raise SystemExit(f"answers other than 200: {sorted(statuses)}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a seeded embedded data directory")
    parser.add_argument("target", help="path and query, e.g. /api/v1/products?limit=20")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", action="store_true", help="keep the gateway's response cache on")
    args = parser.parse_args()
    os.environ.setdefault("PANTHERA_LOG_LEVEL", "WARNING")
    os.environ.setdefault("PANTHERA_RATE_LIMIT_PER_IP_PER_MINUTE", HUGE)
    os.environ.setdefault("PANTHERA_RATE_LIMIT_PER_IP_BURST", HUGE)
    if not args.cache:
        os.environ["PANTHERA_RESPONSE_CACHE_ENABLED"] = "false"
    runs = asyncio.run(measure(args.data_dir, args.target, args.requests, args.repeats))
    print(
        f"{args.target}: {min(runs):.3f} ms CPU per request "
        f"(least of {len(runs)}; all {', '.join(f'{r:.3f}' for r in runs)})"
    )


if __name__ == "__main__":
    main()
