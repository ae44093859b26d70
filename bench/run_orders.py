#!/usr/bin/env python
"""Orders placed and confirmed per second, end to end, beside PostgreSQL's own figure.

One run starts, on free ports, everything it measures:

* the embedded shape: ``panthera run`` on a temporary data dir (SQLite);
* the distributed shape: ``panthera serve`` for every service of
  ``panthera.runtime.registry.SERVICE_NAMES`` and ``panthera serve gateway``, on
  fresh PostgreSQL databases (dropped at the end), an empty Redis database
  (flushed at the end) and RabbitMQ under a namespace of its own (deleted at the
  end);
* a scratch PostgreSQL database for pgbench, with the catalog's and the orders'
  tables made from the services' own table definitions (one schema each).

Each shape gets an administrator (``panthera create-admin``), ``--products``
products with ample stock (``POST /api/v1/products``) and one buyer per client.
A load generator, a process of its own so its CPU is not the servers', keeps
``--concurrency`` buyers placing orders through the gateway: each places one
(``POST /api/v1/orders``, two products, ``tok_visa``), waits until the orders
database says it left PENDING (read every ``--poll-ms``, no HTTP polling), then
places the next. Afterwards every order's ``statusHistory`` is read through the
gateway: the time to CONFIRMED is ``CONFIRMED.at - PENDING.at`` (server) and
``CONFIRMED.at`` minus the moment the client sent the POST (client; same host,
same clock). Orders/s is the number of orders whose CONFIRMED falls inside the
measured window, over its length. Any answer other than 201, any order
CANCELLED or not settled within 30 s fails the run (the figures are still
written).

pgbench runs the equivalent SQL of one order at the same concurrency: in one
transaction, reserve stock on two random variants (the conditional UPDATE the
catalog makes, in a fixed order so that clients cannot deadlock), insert the
order, its two items, its first status-history line and an outbox row.

The three targets take turns for ``--rounds`` rounds; the report gives medians,
CPU ms per order of every process, and with ``--profile SECONDS`` the distributed
shape's processes sampled by py-spy while it is loaded once more.

Run: ``python bench/run_orders.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    PASSWORD,
    BenchError,
    Processes,
    RedisDb,
    clean_env,
    cpu_seconds,
    free_port,
    http,
    install_signal_handlers,
    machine,
    machine_ticks,
    panthera_command,
    scratch_dir,
    sign_up,
    wait_ready,
)
from run_catalog import (
    LAYERS,
    RAISED_LIMITS,
    Postgres,
    RabbitNamespace,
    _scan_pids,
    child_env,
    fold_profile,
    run_to_end,
    terminate_together,
)

TARGET_ORDERS_PER_SECOND = 200.0
TARGET_P99_MS = 250.0
TARGET_PG_SHARE = 0.1  # orders/s over pgbench TPS
SETTLE_TIMEOUT = 30.0
ADMIN_EMAIL = "bench-admin@example.com"
ADDRESS = "1 Bench Street, Springfield, 12345"
# Sign-ups at a tenth of the platform's argon2 cost: the bench measures orders, not hashing.
CHEAP_PASSWORDS = {"password_memory_kib": "1024", "password_time_cost": "1"}
# The saga's own pollers stay at their defaults: kicks after commit drive each order.


def _services() -> tuple[str, ...]:
    from panthera.runtime.registry import SERVICE_NAMES

    return tuple(SERVICE_NAMES)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ------------------------------------------------------------- load generator


def _parse_at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class StatusReader:
    """Which of the given orders have left PENDING, read from the orders database."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            self._pg = await asyncpg.connect(self.where, timeout=10)
        else:
            uri = f"file:{self.where}?mode=ro"
            self._sqlite = sqlite3.connect(uri, uri=True, check_same_thread=False)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    async def settled(self, ids: Sequence[str]) -> dict[str, str]:
        if self._pg is not None:
            rows = await self._pg.fetch(
                "SELECT id::text AS id, status FROM orders "
                "WHERE id = ANY($1::uuid[]) AND status <> 'PENDING'",
                list(ids),
            )
            return {row["id"]: row["status"] for row in rows}
        assert self._sqlite is not None
        # SQLAlchemy keeps a Uuid in SQLite as 32 hex digits.
        by_hex = {uuid.UUID(i).hex: i for i in ids}
        marks = ",".join("?" * len(by_hex))
        query = f"SELECT id, status FROM orders WHERE status <> 'PENDING' AND id IN ({marks})"  # noqa: S608 - placeholders only
        rows = await asyncio.to_thread(self._sqlite.execute(query, list(by_hex)).fetchall)
        return {by_hex[str(i)]: str(s) for i, s in rows if str(i) in by_hex}


async def generate_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: each client places an order, waits for it to settle, places the next.

    On aiohttp and uvloop, the servers' own client stack: httpx spent twice the CPU per
    request, CPU the measured processes share with the load generator.
    """
    import aiohttp

    base = spec["base"]
    tokens: list[str] = spec["tokens"]
    products: list[str] = spec["products"]
    concurrency = int(spec["concurrency"])
    poll = float(spec["poll_ms"]) / 1000
    reader = StatusReader(spec["db_kind"], spec["db"])
    await reader.open()
    waiting: dict[str, asyncio.Future[str]] = {}
    done_polling = asyncio.Event()

    polls = [0]

    async def poller() -> None:
        while not done_polling.is_set():
            if waiting:
                if measure_start <= time.monotonic() < measure_end:
                    polls[0] += 1
                found = await reader.settled(list(waiting))
                for order_id, status in found.items():
                    future = waiting.pop(order_id, None)
                    if future is not None and not future.done():
                        future.set_result(status)
            await asyncio.sleep(poll)

    client = aiohttp.ClientSession(
        base_url=base,
        connector=aiohttp.TCPConnector(limit=concurrency + 4),
        timeout=aiohttp.ClientTimeout(total=30.0),
    )
    records: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    first_failures: list[str] = []
    start_mono = time.monotonic()
    measure_start = start_mono + float(spec["warmup"])
    measure_end = measure_start + float(spec["seconds"])
    marks: dict[str, float] = {}

    def fail(kind: str, detail: str) -> None:
        failures[kind] += 1
        if len(first_failures) < 5:
            first_failures.append(f"{kind}: {detail[:300]}")

    async def buyer(index: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}
        rng = random.Random(index)
        while time.monotonic() < measure_end:
            chosen = rng.sample(products, 2)
            body = {
                "items": [{"productId": p, "quantity": rng.randint(1, 2)} for p in chosen],
                "shippingAddress": ADDRESS,
                "paymentMethod": "tok_visa",
            }
            sent_mono, sent_wall = time.monotonic(), time.time()
            try:
                async with client.post("/api/v1/orders", json=body, headers=headers) as answer:
                    status_code, text = answer.status, await answer.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                fail("socket", repr(exc))
                await asyncio.sleep(0.1)
                continue
            answered_wall = time.time()
            if status_code != 201:
                fail(f"HTTP {status_code}", text)
                await asyncio.sleep(0.1)
                continue
            order_id = json.loads(text)["orderId"]
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            waiting[order_id] = future
            try:
                status = await asyncio.wait_for(future, SETTLE_TIMEOUT)
            except TimeoutError:
                waiting.pop(order_id, None)
                status = "TIMEOUT"
            records.append(
                {
                    "id": order_id,
                    "measured": measure_start <= sent_mono < measure_end,
                    "sent": sent_wall,
                    "answered": answered_wall,
                    "seen": time.time(),
                    "status": status,
                    "token": index % len(tokens),
                }
            )

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        marks[name] = time.time()
        print(f"BENCH_{name.upper()}", flush=True)

    poll_task = asyncio.create_task(poller())
    try:
        await asyncio.gather(
            mark("measure_start", measure_start),
            mark("measure_end", measure_end),
            *(buyer(i) for i in range(concurrency)),
        )
    finally:
        done_polling.set()
        await poll_task
        await reader.close()
    print("BENCH_LOAD_DONE", flush=True)

    # Every order's own history, through the gateway, after the clock has stopped.
    semaphore = asyncio.Semaphore(concurrency)

    async def history(record: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {tokens[record['token']]}"}
        async with (
            semaphore,
            client.get(f"/api/v1/orders/{record['id']}", headers=headers) as answer,
        ):
            status_code, text = answer.status, await answer.text()
        if status_code != 200:
            fail(f"GET HTTP {status_code}", text)
            return
        got = json.loads(text)
        at = {change["status"]: _parse_at(change["at"]) for change in got["statusHistory"]}
        record["final"] = got["status"]
        record["cancel"] = f"{got.get('cancelReason')}: {got.get('cancelMessage')}"
        record["pending_at"] = at.get("PENDING")
        record["confirmed_at"] = at.get("CONFIRMED")

    await asyncio.gather(*(history(r) for r in records if r["status"] != "TIMEOUT"))
    await client.close()

    window = marks["measure_end"] - marks["measure_start"]
    for record in records:
        if record["status"] == "TIMEOUT":
            fail("not settled in 30 s", record["id"])
        elif record.get("final") != "CONFIRMED":
            detail = record["id"] + (f" ({record['cancel']})" if record.get("cancel") else "")
            fail(f"ended {record.get('final') or record['status']}", detail)
    confirmed = [r for r in records if r.get("confirmed_at") is not None]
    in_window = [
        r for r in confirmed if marks["measure_start"] <= r["confirmed_at"] < marks["measure_end"]
    ]
    measured = [r for r in confirmed if r["measured"]]
    server_ms = [1000 * (r["confirmed_at"] - r["pending_at"]) for r in measured]
    client_ms = [1000 * (r["confirmed_at"] - r["sent"]) for r in measured]
    post_ms = [1000 * (r["answered"] - r["sent"]) for r in measured]
    seen_ms = [1000 * (r["seen"] - r["sent"]) for r in measured]
    return {
        "orders_per_second": len(in_window) / window,
        "confirmed_in_window": len(in_window),
        "window_seconds": window,
        "placed_measured": sum(1 for r in records if r["measured"]),
        "placed_total": len(records),
        "server_p50_ms": _percentile(server_ms, 50),
        "server_p99_ms": _percentile(server_ms, 99),
        "client_p50_ms": _percentile(client_ms, 50),
        "client_p99_ms": _percentile(client_ms, 99),
        "post_p50_ms": _percentile(post_ms, 50),
        "post_p99_ms": _percentile(post_ms, 99),
        "seen_p50_ms": _percentile(seen_ms, 50),
        "failures": dict(failures),
        "first_failures": first_failures,
        # Each read of the orders database is a transaction of its own there.
        "status_reads_in_window": polls[0],
    }


def load_generator_main(spec_file: Path) -> int:
    spec = json.loads(spec_file.read_text())
    import uvloop

    result = uvloop.run(generate_load(spec))
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------ targets


class Shape:
    """One shape under load: its gateway, its processes, and where its orders live."""

    def __init__(
        self,
        name: str,
        base: str,
        pids: Mapping[str, int],
        db_kind: str,
        db: str,
        pg_needle: str = "",
    ) -> None:
        self.name = name
        self.base = base
        self.pids = dict(pids)
        self.db_kind = db_kind
        self.db = db
        self.pg_needle = pg_needle
        # For pg_stat_database: the admin DSN and the prefix of the shape's databases.
        self.pg_stats: tuple[str, str] | None = None
        self.tokens: list[str] = []
        self.products: list[str] = []


# Not the platform's processes or its database: left out of the "servers" figure.
_NOT_PANTHERA = frozenset({"load generator", "rabbitmq", "redis"})


def _server_pids(names: Mapping[str, str]) -> dict[str, int]:
    """Running local servers by process name (``comm``), as ``names`` calls them."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            comm = (entry / "comm").read_text().strip()
            if comm in names and names[comm] not in found:
                found[names[comm]] = int(entry.name)
    return found


def _cpu_snapshot(shape: Shape) -> dict[str, float]:
    found = {name: cpu_seconds(pid) for name, pid in shape.pids.items()}
    if shape.pg_needle:
        found.update({f"pg:{pid}": t for pid, t in _scan_pids(shape.pg_needle).items()})
    return found


_PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
# pg_counters adds this one from each database's pg_stat_user_tables.
_PG_PER_ORDER = (*_PG_COUNTERS, "tup_hot_updated")


def pg_counters(admin_dsn: str, prefix: str) -> dict[str, dict[str, int]]:
    """pg_stat_database's counters of the run's databases, by service, and the updates
    each made in place (HOT)."""
    import asyncpg

    async def go() -> dict[str, dict[str, int]]:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            rows = await conn.fetch(
                f"SELECT datname, {', '.join(_PG_COUNTERS)} FROM pg_stat_database "  # noqa: S608 - fixed names
                "WHERE datname LIKE $1",
                prefix + "%",
            )
            found = {
                row["datname"].removeprefix(prefix): {k: int(row[k]) for k in _PG_COUNTERS}
                for row in rows
            }
            # Updates made in place (HOT: no new index entries), per database.
            for row in rows:
                db = await asyncpg.connect(admin_dsn, database=row["datname"], timeout=10)
                try:
                    hot = await db.fetchval(
                        "SELECT coalesce(sum(n_tup_hot_upd), 0) FROM pg_stat_user_tables"
                    )
                finally:
                    await db.close()
                found[row["datname"].removeprefix(prefix)]["tup_hot_updated"] = int(hot)
        finally:
            await conn.close()
        return found

    return asyncio.run(go())


def idle_cpu(shape: Shape, seconds: float = 5.0) -> dict[str, float]:
    """CPU ms per second each process spends with no load: pollers, relays, timers."""
    before = _cpu_snapshot(shape)
    time.sleep(seconds)
    after = _cpu_snapshot(shape)
    return {k: v / seconds for k, v in _cpu_per_order(before, after, 1).items()}


def _cpu_per_order(
    before: Mapping[str, float], after: Mapping[str, float], orders: int
) -> dict[str, float]:
    spent: dict[str, float] = {}
    for name, value in after.items():
        key = "postgres" if name.startswith("pg:") else name
        spent[key] = spent.get(key, 0.0) + value - before.get(name, 0.0)
    return {k: 1000 * v / max(1, orders) for k, v in spent.items()}


def run_load(
    shape: Shape,
    scratch: Path,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    poll_ms: float,
    during: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The load generator against ``shape``; CPU of its processes over the measured window."""
    spec = {
        "base": shape.base,
        "tokens": shape.tokens,
        "products": shape.products,
        "concurrency": concurrency,
        "seconds": seconds,
        "warmup": warmup,
        "poll_ms": poll_ms,
        "db_kind": shape.db_kind,
        "db": shape.db,
    }
    spec_file = scratch / f"load-{shape.name}.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--load-generator", str(spec_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(warmup + seconds + 300, proc.kill)
    timer.start()
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    counters_before: dict[str, dict[str, int]] = {}
    counters_after: dict[str, dict[str, int]] = {}
    ticks: list[tuple[int, int, int]] = []
    result: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("BENCH_MEASURE_START"):
                if shape.pg_stats:
                    counters_before = pg_counters(*shape.pg_stats)
                before = {**_cpu_snapshot(shape), "load generator": cpu_seconds(proc.pid)}
                ticks.append(machine_ticks())
                if during is not None:
                    during()
            elif line.startswith("BENCH_MEASURE_END"):
                after = {**_cpu_snapshot(shape), "load generator": cpu_seconds(proc.pid)}
                ticks.append(machine_ticks())
                if shape.pg_stats:
                    counters_after = pg_counters(*shape.pg_stats)
            elif line.startswith("BENCH_JSON "):
                result = json.loads(line.removeprefix("BENCH_JSON "))
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0 or result is None or len(ticks) != 2:
        raise BenchError(f"{shape.name}: the load generator failed ({code}):\n{stderr[-3000:]}")
    busy = ticks[1][0] - ticks[0][0]
    total = max(1, ticks[1][2] - ticks[0][2])
    result["cpu_ms_per_order"] = _cpu_per_order(before, after, result["confirmed_in_window"])
    result["machine_busy_pct"] = 100 * busy / total
    if counters_after:
        # PostgreSQL publishes these counters up to a second late: a rough figure.
        orders = max(1, result["confirmed_in_window"])
        result["pg_per_order"] = {
            db: {
                k: (counters_after[db][k] - counters_before.get(db, {}).get(k, 0)) / orders
                for k in _PG_PER_ORDER
            }
            for db in counters_after
        }
        # The bench's own reads of the order statuses are not the platform's work.
        if "orders" in result["pg_per_order"]:
            result["pg_per_order"]["orders"]["xact_commit"] -= (
                result.get("status_reads_in_window", 0) / orders
            )
    return result


# ------------------------------------------------------------------ pgbench

_PGBENCH_SCRIPT = r"""
\set p1 random(1, :products)
\set p2 random(1, :products)
\set q1 random(1, 2)
\set q2 random(1, 2)
\set lo least(:p1, :p2)
\set hi greatest(:p1, :p2)
\set qlo CASE WHEN :p1 <= :p2 THEN :q1 ELSE :q2 END
\set qhi :q1 + :q2 - :qlo
BEGIN;
UPDATE catalog.variants SET reserved = reserved + :qlo, updated_at = now()
  WHERE id = md5('v' || :lo)::uuid AND on_hand - reserved >= :qlo;
UPDATE catalog.variants SET reserved = reserved + :qhi, updated_at = now()
  WHERE id = md5('v' || :hi)::uuid AND on_hand - reserved >= :qhi;
INSERT INTO orders.orders (id, user_id, status, currency, total_amount, amount_refunded,
  shipping_address, revision, created_at, updated_at, saga_step, saga_attempts, saga_next_at,
  payment_method, reservation_expires_at, payment_revision)
  VALUES (gen_random_uuid(), md5('u' || :client_id)::uuid, 'PENDING', 'USD',
  1250 * (:q1 + :q2), 0, '1 Bench Street, Springfield, 12345', 1, now(), now(), 'RESERVE',
  0, now(), 'tok_visa', now() + interval '15 minutes', 0)
  RETURNING id AS order_id \gset
INSERT INTO orders.order_items (id, order_id, position, product_id, variant_id, sku, name,
  category_id, quantity, unit_price)
  VALUES (gen_random_uuid(), ':order_id', 0, md5('p' || :p1)::uuid, md5('v' || :p1)::uuid,
  'SKU-' || :p1, 'Bench product ' || :p1, NULL, :q1, 1250),
  (gen_random_uuid(), ':order_id', 1, md5('p' || :p2)::uuid, md5('v' || :p2)::uuid,
  'SKU-' || :p2, 'Bench product ' || :p2, NULL, :q2, 1250);
INSERT INTO orders.order_status_history (id, order_id, status, reason, actor, at)
  VALUES (gen_random_uuid(), ':order_id', 'PENDING', NULL, 'system', now());
INSERT INTO orders.outbox (event_id, type, version, subject, payload, traceparent,
  occurred_at, attempts, next_attempt_at)
  VALUES (gen_random_uuid(), 'orders.order.placed', 1, ':order_id',
  json_build_object('orderId', ':order_id', 'userId', md5('u' || :client_id)::uuid,
    'status', 'PENDING', 'totalAmount', 1250 * (:q1 + :q2), 'currency', 'USD',
    'items', json_build_array(
      json_build_object('productId', md5('p' || :p1)::uuid, 'quantity', :q1),
      json_build_object('productId', md5('p' || :p2)::uuid, 'quantity', :q2)),
    'revision', 1),
  NULL, now(), 0, now());
END;
"""


def pgbench_setup(admin_dsn: str, database: str, products: int) -> None:
    """The catalog's and the orders' tables, from the services' own definitions, one schema each."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from panthera.catalog.models import Base as CatalogBase
    from panthera.orders.models import Base as OrdersBase

    parts = urllib.parse.urlsplit(admin_dsn)
    url = urllib.parse.urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{database}", "", ""))
    fill_products = (
        "INSERT INTO catalog.products (id, slug, name, description, currency, options, "
        "featured, status, price_amount, available, revision, created_at, updated_at) "
        "SELECT md5('p' || n)::uuid, 'bench-' || n, 'Bench product ' || n, '', 'USD', '[]', "
        "false, 'active', 1250, 1000000000, 1, now(), now() FROM generate_series(1, :n) AS n"
    )
    fill_variants = (
        "INSERT INTO catalog.variants (id, product_id, sku, title, option_values, "
        "price_amount, on_hand, reserved, position, created_at, updated_at) "
        "SELECT md5('v' || n)::uuid, md5('p' || n)::uuid, 'SKU-' || n, 'Default', '{}', "
        "1250, 1000000000, 0, 0, now(), now() FROM generate_series(1, :n) AS n"
    )

    async def go() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                for schema, metadata in (
                    ("catalog", CatalogBase.metadata),
                    ("orders", OrdersBase.metadata),
                ):
                    await conn.execute(text(f"CREATE SCHEMA {schema}"))
                    mapped = await conn.execution_options(schema_translate_map={None: schema})
                    await mapped.run_sync(metadata.create_all)
                await conn.execute(text(fill_products), {"n": products})
                await conn.execute(text(fill_variants), {"n": products})
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
        finally:
            await engine.dispose()

    asyncio.run(go())


def run_pgbench(
    admin_dsn: str,
    database: str,
    script: Path,
    *,
    products: int,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(admin_dsn)
    argv = [
        "pgbench",
        "-n",  # no vacuum of pgbench's own tables, which do not exist here
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, os.cpu_count() or 1)),
        "-T",
        str(max(1, round(seconds))),
        "-D",
        f"products={products}",
        "-f",
        str(script),
        database,
    ]
    # pgbench's backends live only as long as the run: their CPU is read while they do.
    seen: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            seen.update(_scan_pids(f" {database} "))

    sampler = threading.Thread(target=sample, daemon=True)
    ticks_before = machine_ticks()
    sampler.start()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
    finally:
        stop.set()
        sampler.join()
    ticks_after = machine_ticks()
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or tps is None:
        raise BenchError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    transactions = int(re.search(r"processed: (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    spent = sum(seen.values())
    return {
        "tps": float(tps.group(1)),
        "latency_avg_ms": float(latency.group(1)) if latency else float("nan"),
        "transactions": transactions,
        "failed": int(failed.group(1)) if failed else 0,
        "postgres_cpu_ms_per_tx": 1000 * spent / max(1, transactions),
        "machine_busy_pct": 100
        * (ticks_after[0] - ticks_before[0])
        / max(1, ticks_after[2] - ticks_before[2]),
    }


# ----------------------------------------------------------------- set-up


def login(base: str, email: str, password: str, timeout: float = 60.0) -> str:
    """A bearer token; retried while the account's credentials travel to the auth service."""
    deadline = time.monotonic() + timeout
    while True:
        status, answer = http(
            "POST", f"{base}/api/v1/users/login", body={"email": email, "password": password}
        )
        if status == 200:
            return str(answer["accessToken"])
        if time.monotonic() > deadline:
            raise BenchError(f"admin login answered {status}: {answer}")
        time.sleep(0.2)


def prepare_shape(shape: Shape, *, products: int, buyers: int, log: Callable[[str], None]) -> None:
    """Products with ample stock, and ``buyers`` signed-in accounts."""
    admin = login(shape.base, ADMIN_EMAIL, PASSWORD)
    # The ADMIN role reaches the auth service as an event: until then tokens lack it.
    deadline = time.monotonic() + 60
    index = 0
    while index < products:
        status, answer = http(
            "POST",
            f"{shape.base}/api/v1/products",
            body={
                "name": f"Bench product {index}",
                "description": "A product of the orders bench.",
                "price": "12.50",
                "stock": 1_000_000,
            },
            headers={"Authorization": f"Bearer {admin}"},
        )
        if status == 403 and index == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            admin = login(shape.base, ADMIN_EMAIL, PASSWORD)
            continue
        index += 1
        if status != 201:
            raise BenchError(f"{shape.name}: POST /api/v1/products answered {status}: {answer}")
        shape.products.append(str(answer["productId"]))
    log(f"  {shape.name}: {products} products")
    tag = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(
            pool.map(
                lambda i: sign_up(shape.base, f"buyer-{tag}-{i}@example.com")[1], range(buyers)
            )
        )
    shape.tokens = found
    log(f"  {shape.name}: {buyers} buyers signed in")


def wait_drained(rabbit: RabbitNamespace, log: Callable[[str], None], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while backlog := rabbit.backlog():
        if time.monotonic() > deadline:
            raise BenchError(f"RabbitMQ queues not drained: {backlog}")
        log(f"  waiting for queued events: {backlog}")
        time.sleep(2)


# ---------------------------------------------------------- saga timeline

_TIMELINE = {
    "orders": (
        "SELECT o.id::text AS id, "
        "min(h.at) FILTER (WHERE h.status = 'PENDING') AS pending, "
        "min(h.at) FILTER (WHERE h.status = 'CONFIRMED') AS confirmed "
        "FROM orders o JOIN order_status_history h ON h.order_id = o.id "
        "WHERE o.created_at >= $1 GROUP BY o.id"
    ),
    "catalog": (
        "SELECT reference AS id, created_at AS reserved, updated_at AS committed "
        "FROM reservations WHERE created_at >= $1"
    ),
    "payments": (
        "SELECT p.order_reference AS id, p.created_at AS payment_created, "
        "min(e.received_at) AS webhook FROM payments p "
        "LEFT JOIN provider_events e ON e.payment_id = p.id "
        "WHERE p.created_at >= $1 GROUP BY p.order_reference, p.created_at"
    ),
}
_STEPS = (
    ("PENDING -> stock reserved (catalog)", "pending", "reserved"),
    ("reserved -> payment created (payments)", "reserved", "payment_created"),
    ("payment created -> webhook received", "payment_created", "webhook"),
    ("webhook -> reservation committed", "webhook", "committed"),
    ("committed -> CONFIRMED", "committed", "confirmed"),
)


def saga_timeline(dsn_of: Callable[[str], str], since: datetime) -> dict[str, Any]:
    """Median and p99 of each saga step's share of the time to CONFIRMED, from the databases."""
    import asyncpg

    async def go() -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for service, query in _TIMELINE.items():
            conn = await asyncpg.connect(dsn_of(service), timeout=10)
            try:
                for row in await conn.fetch(query, since):
                    rows.setdefault(row["id"], {}).update(dict(row))
            finally:
                await conn.close()
        return rows

    rows = asyncio.run(go())
    complete = [r for r in rows.values() if r.get("pending") and r.get("confirmed")]
    out: dict[str, Any] = {"orders": len(complete), "steps": []}
    for label, start, end in _STEPS:
        gaps = [
            1000 * (r[end] - r[start]).total_seconds()
            for r in complete
            if r.get(start) is not None and r.get(end) is not None
        ]
        out["steps"].append(
            {"step": label, "p50_ms": _percentile(gaps, 50), "p99_ms": _percentile(gaps, 99)}
        )
    return out


# ------------------------------------------------------------------ profile


def _load_while(
    shape: Shape,
    scratch: Path,
    recorders: Callable[[], list[subprocess.Popen[bytes]]],
    seconds: float,
    concurrency: int,
    poll_ms: float,
) -> tuple[dict[str, Any], list[int]]:
    """Load the shape once more, ``recorders`` started as the measured window opens; the
    load's figures and each recorder's exit status (recorders left running are killed)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        load = run_load(
            shape,
            scratch,
            concurrency=concurrency,
            seconds=seconds + 1,
            warmup=2,
            poll_ms=poll_ms,
            during=lambda: started.extend(recorders()),
        )
        codes = [proc.wait(timeout=seconds + 60) for proc in started]
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return load, codes


def profile_distributed(
    shape: Shape, scratch: Path, *, seconds: float, concurrency: int, poll_ms: float
) -> dict[str, Any]:
    """py-spy (``--gil``) on each process of the shape while the load runs once more."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise BenchError("py-spy not found: pip install py-spy into the bench's virtualenv")
    outputs = {
        name: scratch / f"profile-{name}.raw" for name in shape.pids if name not in _NOT_PANTHERA
    }

    def start() -> list[subprocess.Popen[bytes]]:
        procs = []
        for name, out in outputs.items():
            argv = [py_spy, "record", "--nonblocking", "--gil", "-r", "100"]
            argv += ["-d", str(round(seconds)), "-f", "raw", "-o", str(out)]
            argv += ["-p", str(shape.pids[name])]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        return procs

    load, _ = _load_while(shape, scratch, start, seconds, concurrency, poll_ms)
    found = {name: fold_profile(out) for name, out in outputs.items() if out.exists()}
    return {"load": load, "processes": found}


def _code_kind(dso: str) -> str:
    """What a shared object ``perf`` names runs: the interpreter, the kernel, or compiled code."""
    if dso.startswith("libpython"):
        return "interpreter"
    if dso.startswith("[kernel") or dso in ("[vdso]", "[vsyscall]"):
        return "kernel"
    return "compiled"


_SERVER_COMMS = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis"}


def _process_name(tid: int, comm: str, names: Mapping[int, str]) -> str:
    """The process a sampled thread belongs to, by the shape's names for its pids."""
    tgid = tid
    with contextlib.suppress(OSError, ValueError):
        status = Path(f"/proc/{tid}/status").read_text()
        tgid = int(re.search(r"^Tgid:\s*(\d+)", status, re.M)[1])  # type: ignore[index]
        comm = Path(f"/proc/{tgid}/comm").read_text().strip()
    if tgid in names:
        return names[tgid]
    return _SERVER_COMMS.get(comm, "other")


def perf_distributed(
    shape: Shape, scratch: Path, *, seconds: float, concurrency: int, poll_ms: float
) -> dict[str, Any]:
    """``perf record`` on the whole machine while the load runs once more: each process's
    share of the on-CPU samples, split into the Python interpreter (bytecode: the platform's
    and its pure-Python libraries'), the kernel, and compiled code (C extensions, libc,
    PostgreSQL, the Erlang VM).

    Unlike py-spy, a process waiting for a core is never sampled: the figures are where
    the CPU went, not where each process stood.
    """
    perf = shutil.which("perf")
    if perf is None:
        raise BenchError("perf not found: apt-get install -y linux-perf")
    data = scratch / "perf.data"

    def start() -> list[subprocess.Popen[bytes]]:
        argv = [perf, "record", "-a", "-F", "499", "-e", "cpu-clock", "-o", str(data)]
        argv += ["--", "sleep", str(round(seconds))]
        return [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    load, codes = _load_while(shape, scratch, start, seconds, concurrency, poll_ms)
    if codes != [0] or not data.exists():
        raise BenchError("perf record failed (perf_event_paranoid, or not root?)")
    report = subprocess.run(
        [perf, "report", "-i", str(data), "--sort", "pid,dso", "--stdio", "-F", "overhead,pid,dso"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    names = {pid: name for name, pid in shape.pids.items()}
    by_process: dict[str, dict[str, float]] = {}
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\d+):(\S+)\s+(\S+)")
    for line in report.splitlines():
        found = line_re.match(line)
        if found is None:
            continue
        pct, pid, comm, dso = float(found[1]), int(found[2]), found[3], found[4]
        name = _process_name(pid, comm, names)
        kinds = by_process.setdefault(name, {"interpreter": 0.0, "kernel": 0.0, "compiled": 0.0})
        kinds[_code_kind(dso)] += pct
    return {"load": load, "processes": by_process}


# ------------------------------------------------------------------ report


def summarise(report: dict[str, Any]) -> None:
    rows: dict[str, Any] = {}
    for shape, runs in report["runs"].items():
        if shape == "pgbench":
            rows[shape] = {
                "tps": _median([r["tps"] for r in runs]),
                "tps_each": [round(r["tps"], 1) for r in runs],
                "latency_avg_ms": _median([r["latency_avg_ms"] for r in runs]),
                "postgres_cpu_ms_per_tx": _median([r["postgres_cpu_ms_per_tx"] for r in runs]),
                "busy_pct": _median([r["machine_busy_pct"] for r in runs]),
            }
            continue
        names = runs[0]["cpu_ms_per_order"].keys()
        rows[shape] = {
            "orders_per_second": _median([r["orders_per_second"] for r in runs]),
            "each": [round(r["orders_per_second"], 1) for r in runs],
            **{
                key: _median([r[key] for r in runs])
                for key in (
                    "server_p50_ms",
                    "server_p99_ms",
                    "client_p50_ms",
                    "client_p99_ms",
                    "post_p50_ms",
                    "post_p99_ms",
                )
            },
            "confirmed": sum(r["confirmed_in_window"] for r in runs),
            "failures": sum(sum(r["failures"].values()) for r in runs),
            "cpu_ms_per_order": {
                n: _median([r["cpu_ms_per_order"].get(n, 0.0) for r in runs]) for n in names
            },
            "busy_pct": _median([r["machine_busy_pct"] for r in runs]),
        }
        with_pg = [r["pg_per_order"] for r in runs if r.get("pg_per_order")]
        if with_pg:
            rows[shape]["pg_per_order"] = {
                db: {
                    k: _median([p.get(db, {}).get(k, 0.0) for p in with_pg]) for k in _PG_PER_ORDER
                }
                for db in with_pg[0]
                if db != "pgbench"
            }
    tps = rows.get("pgbench", {}).get("tps")
    for shape in ("embedded", "distributed"):
        if shape in rows and tps:
            rows[shape]["pg_ratio"] = rows[shape]["orders_per_second"] / tps
    report["summary"] = rows
    checks: list[tuple[str, bool]] = []
    dist = rows.get("distributed")
    if dist is not None:
        checks += [
            (
                f"distributed >= {TARGET_ORDERS_PER_SECOND:.0f} orders/s",
                dist["orders_per_second"] >= TARGET_ORDERS_PER_SECOND,
            ),
            (
                f"distributed p99 to CONFIRMED < {TARGET_P99_MS:.0f} ms",
                dist["server_p99_ms"] < TARGET_P99_MS and dist["client_p99_ms"] < TARGET_P99_MS,
            ),
        ]
        if tps:
            checks.append(
                (
                    f"distributed >= {TARGET_PG_SHARE} x pgbench TPS",
                    dist["pg_ratio"] >= TARGET_PG_SHARE,
                )
            )
    report["checks"] = checks


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["summary"]
    lines = [
        f"command: `{report['command']}`",
        f"date: {report['date']}; commit {report['commit']}; machine: nproc {m['nproc']}, "
        f"{m['cpu_model']}, load average before {m['loadavg'][0]:.2f} "
        f"{m['loadavg'][1]:.2f} {m['loadavg'][2]:.2f}, after {report['loadavg_after'][0]:.2f}",
        f"{report['concurrency']} clients (one buyer each), closed loop, two products per "
        f"order (1-2 each), tok_visa; {report['warmup']:g} s warm-up then {report['seconds']:g} s "
        f"measured per run, median of {report['rounds']} alternating rounds; "
        f"{report['products']} products",
        "",
        "| target | orders/s (CONFIRMED) | each round | p50 / p99 to CONFIRMED, server ms "
        "| p50 / p99 client send to CONFIRMED ms | p50 / p99 POST ms | ÷ pgbench TPS "
        "| machine busy |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for shape in ("embedded", "distributed"):
        if shape not in s:
            continue
        r = s[shape]
        lines.append(
            f"| {shape} | {r['orders_per_second']:.1f} "
            f"| {', '.join(f'{x:.0f}' for x in r['each'])} "
            f"| {r['server_p50_ms']:.0f} / {r['server_p99_ms']:.0f} "
            f"| {r['client_p50_ms']:.0f} / {r['client_p99_ms']:.0f} "
            f"| {r['post_p50_ms']:.0f} / {r['post_p99_ms']:.0f} "
            f"| {r.get('pg_ratio', float('nan')):.3f} | {r['busy_pct']:.0f}% |"
        )
    if "pgbench" in s:
        p = s["pgbench"]
        lines.append(
            f"| pgbench, the equivalent SQL | {p['tps']:.0f} TPS "
            f"| {', '.join(f'{x:.0f}' for x in p['tps_each'])} "
            f"| latency avg {p['latency_avg_ms']:.1f} | | | 1 | {p['busy_pct']:.0f}% |"
        )
    lines += ["", "CPU ms per confirmed order, by process (median of the rounds):", ""]
    for shape in ("embedded", "distributed"):
        if shape in s:
            cpu = sorted(s[shape]["cpu_ms_per_order"].items(), key=lambda kv: -kv[1])
            total = sum(v for k, v in cpu if k not in _NOT_PANTHERA)
            shared = sum(v for k, v in cpu if k in ("rabbitmq", "redis"))
            with_shared = f", with the broker and Redis {total + shared:.1f} ms" if shared else ""
            lines.append(
                f"- {shape} (servers {total:.1f} ms{with_shared}): "
                + ", ".join(f"{k} {v:.1f}" for k, v in cpu)
            )
    for shape, idle in report.get("idle_cpu_ms_per_second", {}).items():
        busy = sorted(idle.items(), key=lambda kv: -kv[1])
        lines.append(
            f"- {shape} idle, CPU ms per second: " + ", ".join(f"{k} {v:.1f}" for k, v in busy)
        )
    if "pgbench" in s:
        lines.append(
            f"- pgbench: postgres {s['pgbench']['postgres_cpu_ms_per_tx']:.2f} ms per transaction"
        )
    pg = s.get("distributed", {}).get("pg_per_order")
    if pg:
        lines += [
            "",
            "Distributed, PostgreSQL work per confirmed order (pg_stat_database, less the "
            "bench's own status reads; pgbench's equivalent: 1 transaction, 5 rows inserted, "
            "2 updated):",
            "",
            "| database | commits | rollbacks | rows inserted | rows updated "
            "| of them in place (HOT) | rows deleted |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for db, c in sorted(pg.items(), key=lambda kv: -kv[1]["xact_commit"]):
            lines.append(
                f"| {db} | {c['xact_commit']:.1f} | {c['xact_rollback']:.1f} "
                f"| {c['tup_inserted']:.1f} | {c['tup_updated']:.1f} "
                f"| {c.get('tup_hot_updated', 0.0):.1f} | {c['tup_deleted']:.1f} |"
            )
        total = sum(c["xact_commit"] + c["xact_rollback"] for c in pg.values())
        lines.append(f"| all | {total:.1f} transactions | | | | | |")
    timeline = report.get("saga_timeline")
    if timeline:
        lines += [
            "",
            f"Distributed saga, step by step ({timeline['orders']} orders of all its runs, "
            "from the services' own timestamps):",
            "",
            "| step | p50 ms | p99 ms |",
            "| --- | ---: | ---: |",
        ]
        lines += [
            f"| {st['step']} | {st['p50_ms']:.0f} | {st['p99_ms']:.0f} |"
            for st in timeline["steps"]
        ]
    lines += ["", "| target | met |", "| --- | --- |"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in report["checks"]]
    failures = {
        shape: [(r["failures"], r["first_failures"]) for r in runs if r.get("failures")]
        for shape, runs in report["runs"].items()
        if shape != "pgbench"
    }
    if any(failures.values()):
        lines += ["", "**Failed orders**: " + json.dumps(failures)]
    lines += _perf_lines(report.get("perf"))
    prof = report.get("profile")
    if prof:
        load = prof["load"]
        lines += [
            "",
            f"py-spy --gil on the distributed processes ({load['orders_per_second']:.0f} "
            "orders/s while sampled), % of samples:",
        ]
        lines += _by_layer(report)
        for name, found in prof["processes"].items():
            lines += ["", f"{name} ({found['samples']} samples):"]
            for key, title in (
                ("self_by_package", "self by package"),
                ("self_by_function", "self by function"),
                ("panthera_inclusive", "inclusive, Panthera's functions"),
            ):
                lines.append(f"- {title}: " + ", ".join(f"{k} {v:.0f}%" for k, v in found[key]))
    return "\n".join(lines)


def _perf_lines(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    rows = sorted(found["processes"].items(), key=lambda kv: -sum(kv[1].values()))
    lines = [
        "",
        f"perf on the whole machine ({found['load']['orders_per_second']:.0f} orders/s while "
        "sampled), on-CPU samples: each process's share of all, and of its own the Python "
        "interpreter's (bytecode), the kernel's and compiled code's (C extensions, libc, "
        "the servers' own binaries):",
        "",
        "| process | of all samples | interpreter | kernel | compiled |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, kinds in rows:
        total = sum(kinds.values())
        if total < 0.5:
            continue
        lines.append(
            f"| {name} | {total:.1f}% | "
            + " | ".join(
                f"{100 * kinds[k] / total:.0f}%" for k in ("interpreter", "kernel", "compiled")
            )
            + " |"
        )
    return lines + _target_budget(found)


def _target_budget(found: dict[str, Any]) -> list[str]:
    """What the services would have to cost per order for the target rate on this machine,
    with the servers' work per order and everything else on it as sampled."""
    shares = {name: sum(kinds.values()) for name, kinds in found["processes"].items()}
    rate = found["load"]["orders_per_second"]
    servers = sum(shares.get(name, 0.0) for name in _SERVERS)
    other = shares.get("other", 0.0)
    services = {n: k for n, k in found["processes"].items() if n not in _NOT_SERVICES}
    now = sum(sum(k.values()) for k in services.values()) / rate
    below_python = sum(k["kernel"] + k["compiled"] for k in services.values()) / rate
    left = 100 - servers * TARGET_ORDERS_PER_SECOND / rate - other
    budget = left / TARGET_ORDERS_PER_SECOND
    if left <= 0:
        return [
            "",
            f"At {TARGET_ORDERS_PER_SECOND:.0f} orders/s the servers alone would need "
            f"{servers * TARGET_ORDERS_PER_SECOND / rate:.0f}% of the machine.",
        ]
    return [
        "",
        f"At {TARGET_ORDERS_PER_SECOND:.0f} orders/s, with PostgreSQL's, RabbitMQ's and "
        f"Redis's work per order as now ({servers:.1f}% of the machine at {rate:.0f} "
        f"orders/s, so {servers * TARGET_ORDERS_PER_SECOND / rate:.0f}%) and the rest of the "
        f"machine as sampled ({other:.1f}%), the services would have {budget:.3f}% of the "
        f"machine per order per second against {now:.3f}% now: {now / budget:.1f} x less "
        f"CPU per order. Their kernel and compiled code alone take {below_python:.3f}%.",
    ]


# The servers the services use, by the names the bench gives their processes.
_SERVERS = {"postgres": "PostgreSQL", "rabbitmq": "RabbitMQ", "redis": "Redis"}
# The services' processes in a perf sample are all but these.
_NOT_SERVICES = frozenset({*_SERVERS, "other"})


# The layers of a profile that are the platform itself: its code and what it is built on.
LAYERS_OURS = tuple(LAYERS)[:3]


def _by_layer(report: dict[str, Any]) -> list[str]:
    """The distributed shape's CPU per order by layer: each process's CPU per order (the
    measured rounds) shared out as its profile's self samples are, with PostgreSQL, the
    broker and Redis as they are; and what an order would cost with the platform's code
    and its frameworks costing nothing, as the orders per second that would make of the
    same machine time."""
    dist = report.get("summary", {}).get("distributed")
    prof = report.get("profile")
    if dist is None or not prof:
        return []
    cpu: dict[str, float] = dist["cpu_ms_per_order"]
    layers: dict[str, float] = {}
    for name, found in prof["processes"].items():
        for layer, pct in found.get("self_by_layer", {}).items():
            layers[layer] = layers.get(layer, 0.0) + cpu.get(name, 0.0) * pct / 100
    for name, title in _SERVERS.items():
        layers[f"{title} (server)"] = cpu.get(name, 0.0)
    total = sum(layers.values())
    if not total:
        return []
    rest = total - sum(layers.get(k, 0.0) for k in LAYERS_OURS)
    rate = dist["orders_per_second"]
    lines = [
        "",
        "Distributed, CPU ms per confirmed order by layer (each process's CPU per order "
        "shared out as its py-spy self samples are):",
        "",
        "| layer | ms per order | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| {layer} | {ms:.2f} | {100 * ms / total:.0f}% |"
        for layer, ms in sorted(layers.items(), key=lambda kv: -kv[1])
    ]
    lines += [
        f"| all | {total:.2f} | 100% |",
        "",
        f"Without {', '.join(LAYERS_OURS)} (as if they cost nothing): {rest:.2f} ms per "
        f"order, so at most {rate * total / rest:.0f} orders/s where {rate:.0f} were "
        "measured (the same machine time over less CPU per order).",
    ]
    return lines


# --------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=15, help="each measured window")
    parser.add_argument("--warmup", type=float, default=4, help="warm-up before each window")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (median)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients (and buyers)")
    parser.add_argument("--products", type=int, default=200, help="products in each shape")
    parser.add_argument("--poll-ms", type=float, default=20, help="orders database read interval")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Panthera setting for both shapes, e.g. saga_poll_seconds=0.1 (repeatable)",
    )
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
        help="afterwards, py-spy the distributed processes this long under load (0: no)",
    )
    parser.add_argument(
        "--perf",
        type=float,
        default=0,
        metavar="SECONDS",
        help="afterwards, perf record the whole machine this long under load: where the "
        "CPU goes by process and kind of code (0: no; needs perf and root)",
    )
    parser.add_argument(
        "--profile-concurrency",
        type=int,
        default=0,
        help="clients while profiling (0: --concurrency). py-spy counts a process that "
        "is ready to run but waiting for a core as busy where it was preempted, mostly "
        "in a socket write that woke another process: with cores to spare, its shares "
        "are nearer to where the CPU goes",
    )
    parser.add_argument("--out", "--json", dest="json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the scratch directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--load-generator", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


def main() -> int:
    args = parse_args()
    if args.load_generator:
        return load_generator_main(args.load_generator)
    if shutil.which("pgbench") is None:
        raise BenchError("pgbench not found: apt-get install -y postgresql-client")
    install_signal_handlers()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    services = _services()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", *sys.argv]),
        "commit": _commit(),
        "machine": machine(),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "products": args.products,
        "runs": {},
    }
    tag = f"bench_orders_{os.getpid()}"
    status = 0
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir(keep=args.keep_logs))
        postgres = Postgres(args.postgres, tag, (*services, "pgbench"))
        stack.callback(postgres.drop)
        rabbit = RabbitNamespace(args.amqp, tag)
        stack.callback(rabbit.delete)
        redis_db = RedisDb(args.redis)
        stack.callback(redis_db.flush)
        procs = stack.enter_context(Processes(scratch))
        stack.callback(terminate_together, procs)

        log("creating databases, picking a Redis database")
        postgres.create()
        redis_url = redis_db.pick()
        ports = {name: free_port() for name in (*services, "gateway", "embedded")}
        settings = {**RAISED_LIMITS, **CHEAP_PASSWORDS, "log_level": "WARNING"}
        settings.update(dict(item.split("=", 1) for item in args.setting))
        report["settings"] = args.setting
        dist_env = child_env(
            clean_env(
                database_url=postgres.url_template(),
                redis_url=redis_url,
                amqp_url=args.amqp,
                amqp_namespace=tag,
                event_transport="rabbitmq",
                service_urls=json.dumps({s: f"http://127.0.0.1:{ports[s]}" for s in services}),
                data_dir=str(scratch / "distributed-data"),
                **settings,
            ),
            scratch / "pycache",
        )
        emb_dir = scratch / "embedded-data"
        emb_env = child_env(clean_env(**settings), scratch / "pycache")
        panthera = panthera_command()
        admin = ["create-admin", "--email", ADMIN_EMAIL, "--password", PASSWORD]
        if not args.skip_embedded:
            log("creating the embedded administrator (and its databases)")
            run_to_end(
                procs, "admin-embedded", [*panthera, *admin, "--data-dir", str(emb_dir)], emb_env
            )(300)
        pgbench_db = postgres.names["pgbench"]
        pgbench_setup(args.postgres, pgbench_db, args.products)
        script = scratch / "order.sql"
        script.write_text(_PGBENCH_SCRIPT)

        log("starting the shapes")
        shapes: dict[str, Shape] = {}
        if not args.skip_embedded:
            child = procs.start(
                "embedded",
                [*panthera, "run", "--port", str(ports["embedded"]), "--data-dir", str(emb_dir)],
                emb_env,
            )
            shapes["embedded"] = Shape(
                "embedded",
                f"http://127.0.0.1:{ports['embedded']}",
                {"embedded": child.pid},
                "sqlite",
                str(emb_dir / "orders.sqlite3"),
            )
        dist_pids = {}
        for name in (*services, "gateway"):
            child = procs.start(
                name, [*panthera, "serve", name, "--port", str(ports[name])], dist_env
            )
            dist_pids[name] = child.pid
        orders_dsn = urllib.parse.urlunsplit(
            urllib.parse.urlsplit(args.postgres)._replace(path=f"/{postgres.names['orders']}")
        )
        # The broker and Redis serve only this shape while it runs: their CPU is the
        # shape's too (the machine's other share, PostgreSQL's, is found per database).
        dist_pids.update(_server_pids({"beam.smp": "rabbitmq", "redis-server": "redis"}))
        shapes["distributed"] = Shape(
            "distributed",
            f"http://127.0.0.1:{ports['gateway']}",
            dist_pids,
            "postgres",
            orders_dsn,
            pg_needle=f"{tag}_",
        )
        shapes["distributed"].pg_stats = (args.postgres, f"{tag}_")
        for name in ("embedded", *services, "gateway"):
            if name in procs.children:
                port = ports[name]
                seconds = wait_ready(
                    f"http://127.0.0.1:{port}/readyz", procs.children[name], timeout=120
                )
                log(f"  {name} ready after {seconds:.1f} s")

        # Only once the services run: with a broker, create-admin publishes without
        # consuming, and the role change would find no queue bound yet.
        log("creating the distributed administrator")
        run_to_end(procs, "admin-distributed", [*panthera, *admin], dist_env)(300)
        log("seeding products and buyers")
        for shape in shapes.values():
            prepare_shape(shape, products=args.products, buyers=args.concurrency, log=log)
        wait_drained(rabbit, log)

        def measure_pgbench(seconds: float) -> dict[str, Any]:
            return run_pgbench(
                args.postgres,
                pgbench_db,
                script,
                products=args.products,
                concurrency=args.concurrency,
                seconds=seconds,
            )

        report["idle_cpu_ms_per_second"] = {}
        for name, shape in shapes.items():
            report["idle_cpu_ms_per_second"][name] = idle_cpu(shape)
        load_started = datetime.now(UTC)
        log("warm-up of pgbench")
        measure_pgbench(3)
        targets = [*shapes, "pgbench"]
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        report["runs"] = runs
        try:
            for index in range(args.rounds):
                shift = index % len(targets)
                for target in [*targets[shift:], *targets[:shift]]:
                    if target == "pgbench":
                        result = measure_pgbench(args.seconds)
                        log(
                            f"  round {index + 1} pgbench: {result['tps']:.0f} TPS, "
                            f"busy {result['machine_busy_pct']:.0f}%"
                        )
                    else:
                        result = run_load(
                            shapes[target],
                            scratch,
                            concurrency=args.concurrency,
                            seconds=args.seconds,
                            warmup=args.warmup,
                            poll_ms=args.poll_ms,
                        )
                        log(
                            f"  round {index + 1} {target}: "
                            f"{result['orders_per_second']:.1f} orders/s, to CONFIRMED p50 "
                            f"{result['server_p50_ms']:.0f} ms p99 "
                            f"{result['server_p99_ms']:.0f} ms (client p99 "
                            f"{result['client_p99_ms']:.0f} ms), busy "
                            f"{result['machine_busy_pct']:.0f}%, failures {result['failures']}"
                        )
                        if target == "distributed":
                            wait_drained(rabbit, log)
                    runs[target].append(result)
            try:
                report["saga_timeline"] = saga_timeline(
                    lambda service: urllib.parse.urlunsplit(
                        urllib.parse.urlsplit(args.postgres)._replace(
                            path=f"/{postgres.names[service]}"
                        )
                    ),
                    load_started,
                )
            except Exception as exc:  # a figure less, not a failed run
                log(f"saga timeline unavailable: {exc!r}")
            # Each recorder loads the distributed shape once more while it samples.
            recordings = (
                ("profile", profile_distributed, args.profile, args.profile_concurrency),
                ("perf", perf_distributed, args.perf, 0),
            )
            for key, record, seconds, clients in recordings:
                if seconds > 0:
                    log(f"{key}: the distributed shape sampled for {seconds:g} s")
                    report[key] = record(
                        shapes["distributed"],
                        scratch,
                        seconds=seconds,
                        concurrency=clients or args.concurrency,
                        poll_ms=args.poll_ms,
                    )
        except BenchError as exc:
            report["error"] = str(exc)
            log(f"measurement failed: {exc}")
            status = 2
        log("stopping")

    report["loadavg_after"] = os.getloadavg()
    report["seconds_total"] = round(time.monotonic() - started, 1)
    if all(runs.values()):
        summarise(report)
        text = render(report) + f"\n\nwhole run: {report['seconds_total']:.0f} s\n"
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = any(r.get("failures") for shape, rs in runs.items() if shape != "pgbench" for r in rs)
    if failed or status:
        print("bench failed: see the failed orders in the report", file=sys.stderr)
        return 2
    missed = [name for name, ok in report.get("checks", []) if not ok]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
