#!/usr/bin/env python
"""Catalog reads: product pages and search, from the gateway's cache and past it.

One run starts, on free ports, everything it measures and loads it in alternation:

* the floors: ``bench/hello.py`` (a bare ASGI app) and a FastAPI hello endpoint
  (this script with ``--serve-fastapi-hello``), both served by uvicorn with the
  options ``panthera run`` / ``panthera serve`` use; the FastAPI one is the
  baseline every ratio is taken against;
* the embedded shape: ``panthera run`` on a temporary data dir seeded with
  ``panthera seed --products N``, twice: as configured (response cache on) and a
  copy of the same data dir with ``PANTHERA_RESPONSE_CACHE_ENABLED=false``;
* the distributed shape: ``panthera serve`` for every service of
  ``panthera.runtime.registry.SERVICE_NAMES`` on fresh PostgreSQL databases
  (dropped at the end), Redis (an empty logical database, flushed at the end),
  RabbitMQ under a namespace of its own (``PANTHERA_AMQP_NAMESPACE``; its queues
  and exchanges are deleted at the end), seeded with ``panthera seed`` under the
  same settings, and two gateways: cache on, and cache off.

Each target (``GET /api/v1/products?limit=20`` and ``?q=<word>&limit=20``, cached
and uncached, per shape) gets a warm-up, then ``--rounds`` rounds take the targets
in turn; the report gives the median. Only 2xx count: any other answer or socket
error fails the run, and so does a "cached" target not answered from the cache
(``X-Cache: HIT``) or an "uncached" one that was.

Run: ``python bench/run_catalog.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BENCH_DIR,
    BenchError,
    Processes,
    RedisDb,
    clean_env,
    cpu_seconds,
    free_port,
    install_signal_handlers,
    machine,
    machine_ticks,
    panthera_command,
    require_wrk,
    scratch_dir,
    wait_ready,
)

# What the run imports itself or needs in its children (the seed needs Pillow).
_NEEDS = "import panthera.catalog.demo, panthera.runtime.apps, uvicorn, asyncpg, aio_pika, redis"


def ensure_python() -> None:
    """Re-run this script with an interpreter that has Panthera and all it needs.

    So ``python bench/run_catalog.py`` works from any shell: the dev virtualenv
    ``/work/venv`` or the repository's ``.venv``, whichever can run the seed.
    """
    try:
        exec(_NEEDS, {})  # noqa: S102 - a fixed string
    except ImportError:
        pass
    else:
        return
    for candidate in (Path("/work/venv/bin/python"), BENCH_DIR.parent / ".venv/bin/python"):
        # A venv's python is a symlink to the base interpreter: compare environments.
        if (
            not candidate.exists()
            or candidate.parent.parent.resolve() == Path(sys.prefix).resolve()
        ):
            continue
        probe = subprocess.run([str(candidate), "-c", _NEEDS], capture_output=True, check=False)
        if probe.returncode == 0:
            print(f"(re-running with {candidate})", file=sys.stderr)
            os.execv(str(candidate), [str(candidate), *sys.argv])  # noqa: S606
    raise SystemExit(
        f"{sys.executable} cannot {_NEEDS!r}: run with the dev virtualenv, "
        "e.g. /work/venv/bin/python bench/run_catalog.py"
    )


ensure_python()

HUGE = str(10**9)
# Budgets raised so that no rate limit answers 429 during the run.
RAISED_LIMITS = {
    "rate_limit_per_ip_per_minute": HUGE,
    "rate_limit_per_ip_burst": HUGE,
    "rate_limit_per_user_per_minute": HUGE,
    "rate_limit_per_user_burst": HUGE,
    "login_attempts_per_account": HUGE,
    "login_attempts_per_address": HUGE,
}
CACHED_TARGET = 0.5  # cached page req/s over FastAPI hello req/s
UNCACHED_TARGET = 0.2  # cache-missing page req/s over FastAPI hello req/s
UNCACHED_MIN_RPS = 1000.0
UNCACHED_MAX_P99_MS = 100.0
PAGE = "/api/v1/products?limit=20"
BASELINE = "fastapi"


def _services() -> tuple[str, ...]:
    from panthera.runtime.registry import SERVICE_NAMES

    return tuple(SERVICE_NAMES)


def _search_word() -> str:
    """A word the demo seed puts in product names (the first material: "cotton")."""
    from panthera.catalog.demo import DEPARTMENTS

    return DEPARTMENTS[0].materials[0].lower()


# ------------------------------------------------------------ FastAPI hello


def serve_fastapi_hello(port: int) -> None:
    """The baseline: FastAPI's tutorial hello, served like Panthera (and hello.py) serve."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/", response_model=None)
    async def hello() -> dict[str, Any]:
        return {"message": "hello", "ok": True}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=20,
        log_level="warning",
    )


# ------------------------------------------------------------ infrastructure


class Postgres:
    """One fresh database per service; dropped (``WITH (FORCE)``) at the end."""

    def __init__(self, admin_dsn: str, prefix: str, services: Sequence[str]) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = prefix
        self.names = {service: f"{prefix}_{service}" for service in services}
        self.created: list[str] = []

    def _run(self, statements: Sequence[str]) -> None:
        import asyncpg

        async def go() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=10)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(go())

    def create(self) -> None:
        for name in self.names.values():
            self._run([f'DROP DATABASE IF EXISTS "{name}"'])
            self.created.append(name)
            self._run([f'CREATE DATABASE "{name}"'])

    def drop(self) -> None:
        for name in self.created:
            try:
                self._run([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])
            except Exception as exc:
                print(f"warning: dropping database {name}: {exc}", file=sys.stderr)
        self.created.clear()

    def unsent_events(self) -> dict[str, int]:
        """Outbox rows not yet relayed, by service: each will bump the gateway's cache."""
        import asyncpg

        async def go() -> dict[str, int]:
            found: dict[str, int] = {}
            for service, name in self.names.items():
                dsn = urllib.parse.urlunsplit(
                    urllib.parse.urlsplit(self.admin_dsn)._replace(path=f"/{name}")
                )
                conn = await asyncpg.connect(dsn, timeout=10)
                try:
                    count = await conn.fetchval("SELECT count(*) FROM outbox WHERE dead_at IS NULL")
                except asyncpg.UndefinedTableError:
                    count = 0
                finally:
                    await conn.close()
                if count:
                    found[service] = int(count)
            return found

        return asyncio.run(go())

    def url_template(self) -> str:
        """``PANTHERA_DATABASE_URL``: the admin DSN with ``{service}``'s database."""
        parts = urllib.parse.urlsplit(self.admin_dsn)
        return urllib.parse.urlunsplit(
            ("postgresql+asyncpg", parts.netloc, f"/{self.prefix}_{{service}}", parts.query, "")
        )


class RabbitNamespace:
    """The queues and exchanges named ``<namespace>.*``: waited on, deleted at the end."""

    def __init__(self, amqp_url: str, namespace: str) -> None:
        self.url = amqp_url
        path = urllib.parse.urlsplit(amqp_url).path
        self.vhost = urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"
        self.namespace = namespace

    def _list(self, kind: str, *columns: str) -> list[list[str]]:
        try:
            done = subprocess.run(
                ["rabbitmqctl", "-q", "-p", self.vhost, f"list_{kind}", "name", *columns],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BenchError(f"rabbitmqctl list_{kind}: {exc}") from exc
        rows = [line.split("\t") for line in done.stdout.splitlines()]
        return [row for row in rows if row[0].startswith(self.namespace + ".")]

    def backlog(self) -> dict[str, int]:
        """Messages waiting in the consumers' queues (not the unrouted or dead ones)."""
        return {
            row[0]: int(row[1])
            for row in self._list("queues", "messages")
            if len(row) > 1
            and row[1].isdigit()
            and int(row[1]) > 0
            and not row[0].endswith((".unrouted", ".dlq"))
        }

    def delete(self) -> None:
        try:
            queues = [row[0] for row in self._list("queues")]
            exchanges = [row[0] for row in self._list("exchanges")]
        except Exception as exc:
            print(f"warning: listing {self.namespace}.* on RabbitMQ: {exc}", file=sys.stderr)
            return
        if not queues and not exchanges:
            return
        import aio_pika

        async def go() -> None:
            connection = await aio_pika.connect(self.url, timeout=10)
            try:
                channel = await connection.channel()
                for queue in queues:
                    await channel.queue_delete(queue)
                for exchange in exchanges:
                    await channel.exchange_delete(exchange)
            finally:
                await connection.close()

        try:
            asyncio.run(go())
        except Exception as exc:
            print(f"warning: deleting {self.namespace}.* on RabbitMQ: {exc}", file=sys.stderr)


def child_env(env: Mapping[str, str], bytecode_dir: Path) -> dict[str, str]:
    """``env`` with a bytecode cache of the run's own, so each child does not recompile.

    The dev environment exports ``PYTHONDONTWRITEBYTECODE=1``: every one of the dozen
    processes would compile every module again (seconds of CPU each on 2 cores).
    Start-up only; what the servers do per request is the same.
    """
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(bytecode_dir)
    return out


def terminate_together(procs: Processes) -> None:
    """SIGTERM to each child still running (its own pid), without waiting."""
    for child in procs.children.values():
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()


def fetch(url: str, timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """One GET: (status, lower-cased headers, body)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def run_to_end(
    procs: Processes, name: str, argv: Sequence[str], env: Mapping[str, str]
) -> Callable[[float], float]:
    """Start a child; returns a function that waits for it and fails unless it exits 0."""
    child = procs.start(name, argv, env)

    def wait(timeout: float) -> float:
        started = time.monotonic()
        try:
            code = child.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{name} still running after {timeout:.0f} s\n{child.tail()}") from exc
        if code != 0:
            raise BenchError(f"{name} exited with {code}:\n{child.tail()}")
        procs.stop(name)
        return time.monotonic() - started

    return wait


# --------------------------------------------------------------------- wrk

# Counts 2xx and other answers, and the X-Cache header of each answer.
_LUA = r"""
wrk.method = "GET"
wrk.headers["Accept"] = "application/json"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  first_bad = 0
  hit = 0
  other_cache = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == 0 then first_bad = status end
  end
  local x = headers["x-cache"] or headers["X-Cache"]
  if x == "HIT" then
    hit = hit + 1
  elseif x ~= nil then
    other_cache = other_cache + 1
  end
end

function done(summary, latency, requests)
  local ok_all, bad_all, first, hit_all, other_all = 0, 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ok_all = ok_all + t:get("ok")
    bad_all = bad_all + t:get("bad")
    hit_all = hit_all + t:get("hit")
    other_all = other_all + t:get("other_cache")
    if first == 0 then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"ok": %.0f, "bad": %.0f, "first_bad": %.0f, "hit": %.0f, ' ..
    '"other_cache": %.0f, "requests": %.0f, "bytes": %.0f, "duration_us": %.0f, ' ..
    '"p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "timeout": %.0f}\n',
    ok_all, bad_all, first, hit_all, other_all, summary.requests, summary.bytes,
    summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class Target:
    key: str
    shape: str  # floor, embedded, distributed
    label: str
    url: str
    kind: str  # baseline, cached, uncached
    watch: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    hit: int
    bytes_per_answer: float
    cpu_ms: dict[str, float]
    busy_pct: float


def _scan_pids(needle: str) -> dict[int, float]:
    """CPU seconds of every process whose command line contains ``needle``.

    PostgreSQL backends show their database in their title, so this finds the
    backends serving a database (their CPU is the database's share of a request).
    """
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


class Loader:
    """Runs wrk on one target with the counting Lua script; checks what it counted."""

    def __init__(
        self,
        executable: str,
        scratch: Path,
        *,
        threads: int,
        connections: int,
        pg_needle: str,
    ) -> None:
        self.executable = executable
        self.script = scratch / "catalog.lua"
        self.script.write_text(_LUA)
        self.threads = threads
        self.connections = connections
        self.pg_needle = pg_needle

    def argv(self, url: str, seconds: float) -> list[str]:
        return [
            self.executable,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout=10s",
            "--latency",
            "-s",
            str(self.script),
            url,
        ]

    def run(self, target: Target, seconds: float) -> Run:
        watch_pg = target.shape == "distributed"
        before = {name: cpu_seconds(pid) for name, pid in target.watch.items()}
        pg_before = _scan_pids(self.pg_needle) if watch_pg else {}
        ticks_before = machine_ticks()
        done = subprocess.run(
            self.argv(target.url, seconds),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        ticks_after = machine_ticks()
        after = {name: cpu_seconds(pid) for name, pid in target.watch.items()}
        pg_after = _scan_pids(self.pg_needle) if watch_pg else {}
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
        if done.returncode != 0 or line is None:
            raise BenchError(
                f"{target.label}: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        ok, bad, hit = int(raw["ok"]), int(raw["bad"]), int(raw["hit"])
        errors = {k: int(raw[k]) for k in ("connect", "read", "write", "timeout")}
        if bad or any(errors.values()) or ok == 0:
            raise BenchError(
                f"{target.label}: {ok} 2xx, {bad} non-2xx (first status "
                f"{int(raw['first_bad'])}), socket errors {errors}\n{done.stdout}"
            )
        if target.kind == "cached" and hit < ok:
            raise BenchError(f"{target.label}: only {hit} of {ok} answers were X-Cache: HIT")
        if target.kind == "uncached" and hit:
            raise BenchError(f"{target.label}: {hit} of {ok} answers came from the cache")
        cpu_ms = {name: 1000 * (after[name] - before[name]) / ok for name in target.watch}
        if watch_pg:
            spent = sum(t - pg_before.get(pid, 0.0) for pid, t in pg_after.items())
            cpu_ms["postgres"] = 1000 * spent / ok
        busy = ticks_after[0] - ticks_before[0]
        total = max(1, ticks_after[2] - ticks_before[2])
        seconds_run = raw["duration_us"] / 1e6
        return Run(
            rps=ok / seconds_run,
            p50_ms=raw["p50_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            ok=ok,
            hit=hit,
            bytes_per_answer=raw["bytes"] / max(1, int(raw["requests"])),
            cpu_ms=cpu_ms,
            busy_pct=100 * busy / total,
        )


def measure(
    loader: Loader,
    targets: Sequence[Target],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, list[Run]]:
    """A warm-up run of each target, then ``rounds`` rounds taking them in turn."""
    for target in targets:
        if warmup > 0:
            result = loader.run(target, warmup)
            log(f"  warm-up {target.label}: {result.rps:.0f} req/s")
    runs: dict[str, list[Run]] = {t.key: [] for t in targets}
    for index in range(rounds):
        # Rotate the order so no target always follows the same one.
        shift = (index * len(targets)) // max(1, rounds)
        for target in [*targets[shift:], *targets[:shift]]:
            result = loader.run(target, seconds)
            runs[target.key].append(result)
            log(
                f"  round {index + 1} {target.label}: {result.rps:.0f} req/s, "
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"machine busy {result.busy_pct:.0f}%"
            )
    return runs


# ------------------------------------------------------------------ profile

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _area(filename: str) -> str:
    """A frame's file as the package it belongs to: ``sqlalchemy``, ``panthera/gateway``..."""
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "?"
    if parts[0] == "panthera" and len(parts) > 2:
        return "/".join(parts[:2])
    if parts[0].startswith("<frozen"):
        return "stdlib"
    if len(parts) == 1:
        return parts[0].removesuffix(".py")
    return parts[0]


# Every package a service's samples land in, by the layer it belongs to: what the
# platform's own code, its frameworks, and the I/O underneath each cost.
LAYERS: dict[str, tuple[str, ...]] = {
    "Panthera's code": ("panthera/",),
    "web framework and models (FastAPI, Starlette, pydantic)": (
        "fastapi",
        "starlette",
        "pydantic",
        "pydantic_core",
        "annotated_types",
    ),
    "SQLAlchemy": ("sqlalchemy",),
    "HTTP server and client (uvicorn, httptools, aiohttp)": (
        "uvicorn",
        "httptools",
        "aiohttp",
        "multidict",
        "yarl",
        "h11",
        "propcache",
        "aiohappyeyeballs",
    ),
    "PostgreSQL driver (asyncpg)": ("asyncpg",),
    "broker client (aio-pika, aiormq, pamqp)": ("aio_pika", "aiormq", "pamqp"),
    "Redis client": ("redis",),
    "event loop (asyncio, uvloop)": ("asyncio", "uvloop", "selectors", "concurrent"),
}
OTHER_LAYER = "everything else (standard library, mail, templates, metrics, logging)"


def layer_of(area: str) -> str:
    """The layer (a key of :data:`LAYERS`, or :data:`OTHER_LAYER`) of a package ``area``."""
    for layer, prefixes in LAYERS.items():
        if any(area == p or (p.endswith("/") and area.startswith(p)) for p in prefixes):
            return layer
    return OTHER_LAYER


def fold_profile(raw_file: Path, top: int = 10) -> dict[str, Any]:
    """Self time by package, function and layer, inclusive time of Panthera's functions
    (% of samples).

    The samples are GIL-holding only (``py-spy --gil``): what costs Python CPU, without
    threads idling in a queue (aiosqlite's, the thread pool's) that py-spy may count.
    """
    total = 0
    by_area: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for m in map(_FRAME.match, stack.split(";")) if m is not None]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        by_area[_area(leaf["file"])] += count
        by_function[f"{leaf['func']} ({_area(leaf['file'])})"] += count
        for name in {
            f"{m['func']} ({_area(m['file'])})"
            for m in frames
            if _area(m["file"]).startswith("panthera/") and "<module>" not in m["func"]
        }:
            ours[name] += count
    total = max(1, total)

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100 * v / total) for k, v in counter.most_common(top)]

    by_layer: Counter[str] = Counter()
    for area, count in by_area.items():
        by_layer[layer_of(area)] += count
    return {
        "samples": total,
        "self_by_layer": {k: 100 * v / total for k, v in by_layer.items()},
        "self_by_package": share(by_area),
        "self_by_function": share(by_function),
        "panthera_inclusive": share(ours),
    }


def profile(
    loader: Loader,
    target: Target,
    pids: Mapping[str, int],
    scratch: Path,
    seconds: float,
) -> dict[str, Any]:
    """py-spy on ``pids`` while wrk loads ``target``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise BenchError("py-spy not found: /work/venv/bin/pip install py-spy")
    load = threading.Thread(
        target=subprocess.run,
        args=(loader.argv(target.url, seconds + 2),),
        kwargs={"capture_output": True, "timeout": seconds + 60, "check": False},
    )
    load.start()
    time.sleep(1)
    recorders = {}
    for name, pid in pids.items():
        out = scratch / f"profile-{target.key}-{name}.raw"
        recorders[name] = (
            out,
            subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--nonblocking",
                    "--gil",
                    "-r",
                    "200",
                    "-d",
                    str(round(seconds)),
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "-p",
                    str(pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        )
    found: dict[str, Any] = {}
    try:
        for name, (out, proc) in recorders.items():
            proc.wait(timeout=seconds + 60)
            if out.exists():
                found[name] = fold_profile(out)
    finally:
        for _, proc in recorders.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        load.join()
    return found


# ------------------------------------------------------------------ report


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarise(target: Target, runs: Sequence[Run], baseline: Sequence[Run]) -> dict[str, Any]:
    names = runs[0].cpu_ms.keys()
    rps = _median([r.rps for r in runs])
    base = _median([r.rps for r in baseline])
    row: dict[str, Any] = {
        "key": target.key,
        "shape": target.shape,
        "label": target.label,
        "url": target.url,
        "kind": target.kind,
        "rps": rps,
        "rps_each": [round(r.rps, 1) for r in runs],
        "p50_ms": _median([r.p50_ms for r in runs]),
        "p99_ms": _median([r.p99_ms for r in runs]),
        "ratio": rps / base,
        # Each round's ratio to the baseline of the same round: the two ran minutes
        # apart at most, so neighbours' load moves both.
        "ratio_rounds": _median([r.rps / b.rps for r, b in zip(runs, baseline, strict=True)]),
        "hit_pct": 100 * sum(r.hit for r in runs) / max(1, sum(r.ok for r in runs)),
        "bytes_per_answer": _median([r.bytes_per_answer for r in runs]),
        "cpu_ms": {n: _median([r.cpu_ms[n] for r in runs]) for n in names},
        "busy_pct": _median([r.busy_pct for r in runs]),
    }
    checks: list[tuple[str, bool]] = []
    if target.kind == "cached":
        checks.append((f">= {CACHED_TARGET} x FastAPI hello", row["ratio"] >= CACHED_TARGET))
    elif target.kind == "uncached":
        checks += [
            (f">= {UNCACHED_TARGET} x FastAPI hello", row["ratio"] >= UNCACHED_TARGET),
            (f"> {UNCACHED_MIN_RPS:.0f} req/s", rps > UNCACHED_MIN_RPS),
            (f"p99 < {UNCACHED_MAX_P99_MS:.0f} ms", row["p99_ms"] < UNCACHED_MAX_P99_MS),
        ]
    row["checks"] = checks
    return row


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    w = report["wrk"]
    lines = [
        f"command: `{report['command']}`",
        f"date: {report['date']}; machine: nproc {m['nproc']}, {m['cpu_model']}, "
        f"kernel {m['kernel']}, Python {m['python']}, load average before "
        f"{m['loadavg'][0]:.2f}; interpreter {report['python']}",
        f"wrk -t{w['threads']} -c{w['connections']} -d{w['seconds']:g}s --latency, "
        f"warm-up {w['warmup']:g} s per target, median of {w['rounds']} alternating rounds "
        f"over all {len(report['rows'])} targets; only 2xx counted (any other fails the "
        f"run); {report['products']} seeded products, search word `{report['word']}` "
        f"({report['search_total']} matches)",
        "",
        "| shape | target | req/s (median) | x FastAPI hello | p50 ms | p99 ms "
        "| req/s each round | X-Cache HIT | CPU ms per request | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for row in report["rows"]:
        checks = row["checks"]
        target = "; ".join(name for name, _ in checks) or "baseline"
        met = "; ".join("yes" if ok else "**no**" for _, ok in checks) or "-"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_ms"].items())
        ratio = f"{row['ratio']:.2f}"
        if row["kind"] != "baseline":
            ratio += f" ({row['ratio_rounds']:.2f})"
        hit = f"{row['hit_pct']:.0f}%" if row["kind"] != "baseline" else "-"
        lines.append(
            f"| {row['shape']} | {row['label']} | {row['rps']:.0f} | {ratio} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {', '.join(f'{x:.0f}' for x in row['rps_each'])} | {hit} | {cpu} "
            f"| {target} | {met} |"
        )
    lines += [
        "",
        "x FastAPI hello: median req/s over the baseline's median req/s (in brackets: the "
        "median of each round's ratio). CPU ms per request: CPU time each process spent "
        "per 2xx answer (postgres: the backends of the run's catalog database); "
        f"machine busy during the runs: {report['busy_range']}.",
    ]
    for name, found in report.get("profiles", {}).items():
        lines += ["", f"py-spy --gil, {name} ({found['samples']} samples), % of samples:", ""]
        for key, title in (
            ("self_by_package", "self time by package"),
            ("self_by_function", "self time by function"),
            ("panthera_inclusive", "inclusive time of Panthera's functions"),
        ):
            lines.append(f"- {title}: " + ", ".join(f"{k} {v:.0f}%" for k, v in found[key]))
    return "\n".join(lines)


# --------------------------------------------------------------------- main


def wait_for_quiet_cache(
    redis_url: str, deadline: float, log: Callable[[str], None], quiet_seconds: float = 3.0
) -> None:
    """Return once no invalidation has bumped the catalog's cache for ``quiet_seconds``."""
    import redis

    from panthera.gateway.cache import RedisResponseCache

    # The key the gateway bumps (its cache is made with the default prefix).
    generation_key = RedisResponseCache(redis.asyncio.Redis.from_url(redis_url)).generation_key(
        "catalog"
    )
    client = redis.Redis.from_url(redis_url)
    try:
        last, since = client.get(generation_key), time.monotonic()
        while time.monotonic() - since < quiet_seconds:
            if time.monotonic() > deadline:
                raise BenchError("the gateway's cache kept being invalidated")
            time.sleep(0.5)
            now = client.get(generation_key)
            if now != last:
                log("  waiting for the gateway's cache to stop being invalidated")
                last, since = now, time.monotonic()
    finally:
        client.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=8, help="each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up run per target")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--products", type=int, default=1000, help="panthera seed --products")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="server URL")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/", help="broker")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="afterwards, py-spy the processes of each missed target this long (0: no)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the scratch directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--serve-fastapi-hello", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.serve_fastapi_hello:
        serve_fastapi_hello(args.port)
        return 0
    install_signal_handlers()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    services = _services()
    word = _search_word()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
        },
        "products": args.products,
        "word": word,
        "python": sys.executable,
    }
    executable = require_wrk()
    tag = f"bench_catalog_{os.getpid()}"

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir(keep=args.keep_logs))
        bytecode = scratch / "pycache"
        postgres = Postgres(args.postgres, tag, services)
        stack.callback(postgres.drop)
        rabbit = RabbitNamespace(args.amqp, tag)
        stack.callback(rabbit.delete)
        redis_db = RedisDb(args.redis)
        stack.callback(redis_db.flush)
        # Entered last, left first: the processes stop before their databases go.
        procs = stack.enter_context(Processes(scratch))
        # Left before ``procs``: every child gets SIGTERM at once, so the one-by-one
        # stop that follows (SIGKILL after 15 s) only waits for them.
        stack.callback(terminate_together, procs)

        # ------------------------------------------------------------ seed
        log("creating databases, picking a Redis database")
        postgres.create()
        redis_url = redis_db.pick()
        ports = {name: free_port() for name in (*services, "gateway", "gateway-nocache")}
        dist_env = clean_env(
            database_url=postgres.url_template(),
            redis_url=redis_url,
            amqp_url=args.amqp,
            amqp_namespace=tag,
            event_transport="rabbitmq",
            service_urls=json.dumps({s: f"http://127.0.0.1:{ports[s]}" for s in services}),
            log_level="WARNING",
            data_dir=str(scratch / "distributed-data"),
            **RAISED_LIMITS,
        )
        dist_env = child_env(dist_env, bytecode)
        emb_env = child_env(clean_env(log_level="WARNING", **RAISED_LIMITS), bytecode)
        emb_dir = scratch / "embedded-data"
        panthera = panthera_command()
        seed = ["seed", "--products", str(args.products)]
        log(f"seeding {args.products} products, embedded (SQLite) and distributed (PostgreSQL)")
        wait_emb = run_to_end(
            procs, "seed-embedded", [*panthera, *seed, "--data-dir", str(emb_dir)], emb_env
        )
        wait_dist = run_to_end(procs, "seed-distributed", [*panthera, *seed], dist_env)
        log(f"  embedded seed done after {wait_emb(300):.1f} s more")
        log(f"  distributed seed done after {wait_dist(300):.1f} s more")
        # The uncached embedded instance gets a copy: two processes never share SQLite files.
        emb_nocache_dir = scratch / "embedded-nocache-data"
        shutil.copytree(emb_dir, emb_nocache_dir)

        # ------------------------------------------------------------ start
        log("starting the floors, the embedded shape twice, the distributed shape")
        hello_port, fastapi_port = free_port(), free_port()
        floor_env = child_env(clean_env(), bytecode)
        hello = procs.start(
            "hello",
            [sys.executable, str(BENCH_DIR / "hello.py"), "--port", str(hello_port)],
            floor_env,
        )
        fastapi_hello = procs.start(
            "fastapi-hello",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-fastapi-hello",
                "--port",
                str(fastapi_port),
            ],
            floor_env,
        )
        emb_ports = {"embedded": free_port(), "embedded-nocache": free_port()}
        procs.start(
            "embedded",
            [*panthera, "run", "--port", str(emb_ports["embedded"]), "--data-dir", str(emb_dir)],
            emb_env,
        )
        procs.start(
            "embedded-nocache",
            [
                *panthera,
                "run",
                "--port",
                str(emb_ports["embedded-nocache"]),
                "--data-dir",
                str(emb_nocache_dir),
            ],
            {**emb_env, "PANTHERA_RESPONSE_CACHE_ENABLED": "false"},
        )
        for name in services:
            procs.start(name, [*panthera, "serve", name, "--port", str(ports[name])], dist_env)
        procs.start(
            "gateway", [*panthera, "serve", "gateway", "--port", str(ports["gateway"])], dist_env
        )
        procs.start(
            "gateway-nocache",
            [*panthera, "serve", "gateway", "--port", str(ports["gateway-nocache"])],
            {**dist_env, "PANTHERA_RESPONSE_CACHE_ENABLED": "false"},
        )
        bases = {
            "hello": f"http://127.0.0.1:{hello_port}",
            "fastapi-hello": f"http://127.0.0.1:{fastapi_port}",
            **{name: f"http://127.0.0.1:{port}" for name, port in emb_ports.items()},
            **{name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        }
        wait_ready(f"{bases['hello']}/", hello)
        wait_ready(f"{bases['fastapi-hello']}/", fastapi_hello)
        for name in ("embedded", "embedded-nocache", *services, "gateway", "gateway-nocache"):
            seconds = wait_ready(f"{bases[name]}/readyz", procs.children[name], timeout=120)
            log(f"  {name} ready after {seconds:.1f} s")

        deadline = time.monotonic() + 180
        # Seed events still reaching the services would load the machine, and each
        # one reaching the gateway retires its cached answers, so the check below
        # could see a miss where it wants a hit, and a round misses mid-run: wait
        # until the services' outboxes are relayed and the queues drained.
        while backlog := {**postgres.unsent_events(), **rabbit.backlog()}:
            if time.monotonic() > deadline:
                raise BenchError(f"events not relayed or queues not drained: {backlog}")
            log(f"  waiting for events: {backlog}")
            time.sleep(2)
        # Under a heavy load events already off the queues can still be on their way
        # into the gateway's consumer: wait until the cache's generation stands still.
        wait_for_quiet_cache(redis_db.url, deadline, log)

        # ----------------------------------------------------------- check
        search = f"/api/v1/products?q={urllib.parse.quote(word)}&limit=20"
        report["search_total"] = "?"
        for name in ("embedded", "embedded-nocache", "gateway", "gateway-nocache"):
            for path in (PAGE, search):
                for _ in range(2):  # the second answer of a cached instance is a hit
                    status, headers, body = fetch(bases[name] + path)
                if status != 200 or not json.loads(body):
                    raise BenchError(f"{name} {path}: {status} {body[:300]!r}")
                want_hit = not name.endswith("nocache")
                if (headers.get("x-cache") == "HIT") != want_hit:
                    raise BenchError(f"{name} {path}: X-Cache {headers.get('x-cache')!r}")
                total = headers.get("x-total-count", "?")
                if path == PAGE and total != str(args.products):
                    raise BenchError(f"{name} {path}: X-Total-Count {total}, not {args.products}")
                if path == search:
                    report["search_total"] = total
        # --------------------------------------------------------- measure
        pid = {name: child.pid for name, child in procs.children.items()}
        targets = [
            Target("hello", "floor", "bare ASGI hello (hello.py)", bases["hello"] + "/",
                   "baseline", {"hello": pid["hello"]}),
            Target(BASELINE, "floor", "FastAPI hello (baseline)", bases["fastapi-hello"] + "/",
                   "baseline", {"fastapi-hello": pid["fastapi-hello"]}),
        ]  # fmt: skip
        shapes = {
            "embedded": ("embedded", "embedded-nocache", (), ()),
            "distributed": ("gateway", "gateway-nocache", ("catalog",), ("catalog",)),
        }
        for shape, (on, off, also_on, also_off) in shapes.items():
            for what, path in (("page", PAGE), ("search", search)):
                key = f"{shape[0]}-{what}"
                watch_on = {name: pid[name] for name in (on, *also_on)}
                watch_off = {name: pid[name] for name in (off, *also_off)}
                targets += [
                    Target(key, shape, f"GET {path} cached", bases[on] + path, "cached", watch_on),
                    Target(f"{key}-off", shape, f"GET {path} uncached", bases[off] + path,
                           "uncached", watch_off),
                ]  # fmt: skip
        loader = Loader(
            executable,
            scratch,
            threads=args.threads,
            connections=args.connections,
            pg_needle=f"{tag}_catalog",
        )
        log(f"measuring {len(targets)} targets")
        runs = measure(
            loader,
            targets,
            seconds=args.seconds,
            warmup=args.warmup,
            rounds=args.rounds,
            log=log,
        )
        report["rows"] = [summarise(t, runs[t.key], runs[BASELINE]) for t in targets]
        busy = [r.busy_pct for target_runs in runs.values() for r in target_runs]
        report["busy_range"] = f"{min(busy):.0f}-{max(busy):.0f}%"

        if args.profile > 0:
            report["profiles"] = {}
            missed = {
                row["key"] for row in report["rows"] if any(not ok for _, ok in row["checks"])
            }
            for target in targets:
                if target.key not in missed:
                    continue
                log(f"profiling {target.label}")
                found = profile(loader, target, target.watch, scratch, args.profile)
                for name, folded in found.items():
                    report["profiles"][f"{target.shape} {target.label}: {name}"] = folded
        log("stopping")

    report["seconds"] = round(time.monotonic() - started, 1)
    text = render(report) + f"\n\nwhole run: {report['seconds']:.0f} s\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    missed = [row for row in report["rows"] if any(not ok for _, ok in row["checks"])]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
