#!/usr/bin/env python
"""CPU per request of the order saga's catalog calls, direct path against FastAPI's alone.

In process, without a server: a catalog service alone, on a PostgreSQL database of
its own (created, then dropped), is called directly with ``POST
/internal/reservations`` (a fresh reference each time, one line of a product with
ample stock) and ``POST /internal/reservations/{reference}/commit`` (the
reservations just made), in blocks that alternate between the routes as they are
(direct path first) and the same routes with their application swapped for
FastAPI's endpoint alone. CPU time of the process (the driver's work included,
PostgreSQL's not), the least of ``--repeats`` blocks each way: both sides do the
same database work, so the difference is what the direct path saves.

    .venv/bin/python bench/direct_inprocess.py --postgres postgresql://postgres@127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.routing import APIRoute

from panthera.kernel.http.direct import fastapi_only

RESERVE = "/internal/reservations"
COMMIT = "/internal/reservations/{reference}/commit"


def _route(app: FastAPI, path: str) -> APIRoute:
    (route,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == path]
    return route


async def measure(postgres: str, requests: int, repeats: int) -> dict[str, dict[str, float]]:
    from panthera.kernel.settings import Settings
    from panthera.runtime.platform import Platform

    database = f"panthera_bench_direct_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{postgres}/postgres")
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                data_dir=Path(data_dir),
                database_url=f"{postgres.replace('postgresql:', 'postgresql+asyncpg:')}/{database}",
            )
            platform = Platform(settings, ["catalog"])
            await platform.start()
            try:
                return await _measure(platform, settings, requests, repeats)
            finally:
                await platform.stop()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _measure(
    platform: Any, settings: Any, requests: int, repeats: int
) -> dict[str, dict[str, float]]:
    from panthera.catalog import service as catalog_service
    from panthera.catalog.search import search_for

    runtime = platform.runtimes["catalog"]
    catalog: FastAPI = platform.apps["catalog"]
    async with runtime.uow() as uow:
        product = await catalog_service.create_product(
            uow,
            search_for("postgresql"),
            name="Plenty",
            description="",
            currency="USD",
            category=None,
            slug=None,
            featured=False,
            options=[],
            variants=[catalog_service.VariantSpec(price="1.00", stock=10_000_000, title=None)],
            actor_id=None,
        )
        await uow.commit()
    product_id = str(product.id)
    token = settings.internal_token.get_secret_value().encode()
    statuses: set[int] = set()
    numbers = itertools.count()
    # References of this run only.
    run = uuid.uuid4().hex[:8]

    async def call(catalog: FastAPI, method: str, path: str, body: bytes = b"") -> bytes:
        answer: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.add(message["status"])
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"catalog"),
                (b"content-type", b"application/json"),
                (b"x-internal-token", token),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await catalog(scope, receive, send)
        return b"".join(answer)

    def reservation(reference: str) -> bytes:
        return json.dumps(
            {"reference": reference, "lines": [{"productId": product_id, "quantity": 1}]}
        ).encode()

    async def block(kind: str) -> tuple[float, float]:
        references = [f"bench-{run}-{next(numbers)}" for _ in range(requests)]
        started = time.process_time()
        for reference in references:
            await call(catalog, "POST", RESERVE, reservation(reference))
        reserving = time.process_time() - started
        started = time.process_time()
        for reference in references:
            await call(catalog, "POST", f"/internal/reservations/{reference}/commit")
        committing = time.process_time() - started
        return reserving / requests * 1000, committing / requests * 1000

    routes = [_route(catalog, RESERVE), _route(catalog, COMMIT)]
    runs: dict[str, dict[str, list[float]]] = {
        side: {"reserve": [], "commit": []} for side in ("direct", "fastapi")
    }
    await block("warm-up")
    for _ in range(repeats):
        for side in ("direct", "fastapi"):
            if side == "direct":
                reserve, commit = await block(side)
            else:
                with fastapi_only(routes[0]), fastapi_only(routes[1]):
                    reserve, commit = await block(side)
            runs[side]["reserve"].append(reserve)
            runs[side]["commit"].append(commit)
    if statuses - {200, 204}:
        raise SystemExit(f"unexpected answers: {sorted(statuses)}")
    return {side: {name: min(values) for name, values in by.items()} for side, by in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432", help="server, no database"
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PANTHERA_LOG_LEVEL", "WARNING")
    found = asyncio.run(measure(args.postgres, args.requests, args.repeats))
    for name in ("reserve", "commit"):
        direct, alone = found["direct"][name], found["fastapi"][name]
        print(
            f"{name}: direct {direct:.3f} ms CPU per request, FastAPI alone {alone:.3f} "
            f"(saves {alone - direct:.3f} ms, x{direct / alone:.2f})"
        )


if __name__ == "__main__":
    main()
