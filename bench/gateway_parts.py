#!/usr/bin/env python
"""What each piece of the gateway's request path costs, alone, in CPU per call.

The distributed gateway does, per proxied request: verify the bearer token
(memoized), ask Redis whether it is revoked (MGET), spend the per-address and
per-user rate-limit budgets (two Lua calls), and forward with ``HttpUpstream``
(aiohttp). This script times each of those in one process, by CPU time (robust on
a shared machine, unlike wall time), against ``bench/hello.py`` and an empty Redis
database (flushed at the end):

* ``HttpUpstream.forward`` (the gateway's own code and aiohttp) at concurrency 1,
  8 and 32, the least of ``--repeats`` runs: a busy neighbour only ever adds;
* a minimal keep-alive HTTP/1.1 client on asyncio streams: the floor for a hop;
* token verification uncached and memoized; the revocation MGET; one rate-limit hit.

Run: ``python bench/gateway_parts.py`` (one to three minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BENCH_DIR,
    BenchError,
    Processes,
    RedisDb,
    clean_env,
    ensure_panthera_python,
    free_port,
    install_signal_handlers,
    machine,
    scratch_dir,
    wait_ready,
)

ensure_panthera_python()

Call = Callable[[], Awaitable[Any]]


async def drive(call: Call, total: int, concurrency: int) -> dict[str, float]:
    """``total`` calls from ``concurrency`` workers: CPU ms per call and calls per second."""
    per_worker = max(1, total // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    calls = per_worker * concurrency
    return {"cpu_ms": 1000 * cpu / calls, "per_s": calls / wall, "calls": calls}


class RawPool:
    """The floor: one keep-alive connection per worker, hand-written HTTP/1.1."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.size = size
        self.request = (
            b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 127.0.0.1\r\n"
            b"x-request-id: 0123456789abcdef0123456789abcdef\r\n\r\n"
        )

    async def open(self) -> None:
        for _ in range(self.size):
            self.free.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def get(self) -> bytes:
        reader, writer = await self.free.get()
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            return await reader.readexactly(length)
        finally:
            self.free.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self.free.empty():
            _reader, writer = self.free.get_nowait()
            writer.close()


async def measure(hello_port: int, redis_url: str, total: int, repeats: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from panthera.gateway.upstreams import HttpUpstream
    from panthera.kernel.ratelimit import build_rate_limiter
    from panthera.kernel.security.principal import RedisRevocations
    from panthera.kernel.security.tokens import (
        SigningKey,
        StaticKeySource,
        TokenIssuer,
        TokenVerifier,
        jwks_document,
    )

    results: dict[str, Any] = {}
    headers = [
        (b"host", b"127.0.0.1"),
        (b"user-agent", b"wrk"),
        (b"authorization", b"Bearer " + b"x" * 560),
        (b"x-client-ip", b"127.0.0.1"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-prefix", b"/api/v1/users"),
        (b"x-request-id", b"0123456789abcdef0123456789abcdef"),
        (b"traceparent", b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"),
        (b"x-user-id", b"31c0d778-2eff-4e10-9362-ae7d34a59255"),
    ]
    scope = {"type": "http", "method": "GET", "query_string": b"", "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    async def forward_with(upstream: HttpUpstream) -> Call:
        async def call() -> None:
            await upstream.forward(scope, receive, send, path="/", headers=headers)

        return call

    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(repeats):
        for concurrency in (1, 8, 32):
            upstream = HttpUpstream(
                f"http://127.0.0.1:{hello_port}", timeout_seconds=5.0, retries=2
            )
            call = await forward_with(upstream)
            await drive(call, 200, concurrency)  # open the connections, warm up
            samples.setdefault(f"HttpUpstream.forward, concurrency {concurrency}", []).append(
                await drive(call, total, concurrency)
            )
            await upstream.close()
    for name, runs in samples.items():
        results[name] = dict(min(runs, key=lambda run: run["cpu_ms"]))
        results[name]["cpu_ms_each"] = [round(run["cpu_ms"], 3) for run in runs]

    for concurrency in (1, 32):
        pool = RawPool(hello_port, concurrency)
        await pool.open()
        await drive(pool.get, 200, concurrency)
        results[f"raw asyncio keep-alive client, concurrency {concurrency}"] = await drive(
            pool.get, total, concurrency
        )
        await pool.close()

    key = SigningKey.generate()
    issuer = TokenIssuer([key], issuer="panthera", audience="panthera-api")
    token = issuer.issue_access_token(
        "31c0d778-2eff-4e10-9362-ae7d34a59255", roles=["USER"], ttl_seconds=900
    )
    source = StaticKeySource(jwks_document([key]))
    uncached = TokenVerifier(source, issuer="panthera", audience="panthera-api", cache_size=0)
    cached = TokenVerifier(source, issuer="panthera", audience="panthera-api")

    async def verify_uncached() -> None:
        await uncached.verify_access_token(token)

    async def verify_cached() -> None:
        await cached.verify_access_token(token)

    results["JWT ES256 verify, uncached"] = await drive(verify_uncached, total // 4, 1)
    results["JWT verify, memoized (the steady state)"] = await drive(verify_cached, total, 1)

    client = Redis.from_url(redis_url)
    revocations = RedisRevocations(client)
    limiter = build_rate_limiter(redis_url)

    async def revoked() -> None:
        await revocations.is_revoked(
            token_id="0123", user_id="31c0d778-2eff-4e10-9362-ae7d34a59255", issued_at_ms=1
        )

    async def hit() -> None:
        await limiter.hit("ip:127.0.0.1", rate_per_minute=10**9, burst=10**9)

    for concurrency in (1, 32):
        await drive(revoked, 100, concurrency)
        results[f"Redis revocation MGET, concurrency {concurrency}"] = await drive(
            revoked, total, concurrency
        )
        await drive(hit, 100, concurrency)
        results[f"Redis rate-limit hit (Lua), concurrency {concurrency}"] = await drive(
            hit, total, concurrency
        )
    await client.aclose()
    return results


def run_loop(coro: Awaitable[Any]) -> Any:
    """Run on uvloop when installed, as uvicorn does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each hop, least kept")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="server URL")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    install_signal_handlers()

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir())
        redis_db = RedisDb(args.redis)
        stack.callback(redis_db.flush)
        procs = stack.enter_context(Processes(scratch))
        port = free_port()
        hello = procs.start(
            "hello", [sys.executable, str(BENCH_DIR / "hello.py"), "--port", str(port)], clean_env()
        )
        wait_ready(f"http://127.0.0.1:{port}/", hello)
        results = run_loop(measure(port, redis_db.pick(), args.calls, args.repeats))

    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, load {info['loadavg'][0]:.2f}")
    print(f"command: `{shlex.join([Path(sys.executable).as_posix(), *sys.argv])}`")
    print("\n| piece | CPU ms per call (this process) | calls/s | CPU ms each repeat |")
    print("| --- | ---: | ---: | --- |")
    for name, row in results.items():
        each = ", ".join(f"{x:.3f}" for x in row.get("cpu_ms_each", []))
        print(f"| {name} | {row['cpu_ms']:.3f} | {row['per_s']:.0f} | {each} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
