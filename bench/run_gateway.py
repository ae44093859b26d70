#!/usr/bin/env python
"""Gateway throughput: hello floor vs a service directly vs the same call through the gateway.

One run starts, on free ports:

* ``bench/hello.py``: a bare ASGI app served by uvicorn like Panthera is (the floor);
* the distributed shape: ``panthera serve auth|users|notifications|gateway`` on fresh
  PostgreSQL databases (created here, dropped at the end), Redis (an empty logical
  database, flushed at the end), RabbitMQ (a vhost of its own, deleted at the end);
* afterwards the embedded shape: ``panthera run`` on a temporary data dir.

and loads each target with wrk (``-t1 -c32`` by default): a warm-up run of each,
then ``--rounds`` rounds that take the targets in turn, reporting the median.
Only 2xx answers count; any other answer or socket error fails the run. The
ratios (gateway/direct, direct/hello, gateway/hello) are what to compare across
runs: the machine is shared, absolute numbers move with the neighbours.

Run: ``/work/venv/bin/python bench/run_gateway.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BENCH_DIR,
    PASSWORD,
    BenchError,
    Processes,
    RedisDb,
    Wrk,
    WrkResult,
    clean_env,
    ensure_panthera_python,
    free_port,
    install_signal_handlers,
    machine,
    median_result,
    panthera_command,
    require_wrk,
    scratch_dir,
    sign_up,
    wait_ready,
)

ensure_panthera_python()


def _services() -> tuple[str, ...]:
    """Every service the gateway routes to, as the platform's registry names them."""
    from panthera.runtime.registry import SERVICE_NAMES

    return tuple(SERVICE_NAMES)


SERVICES = _services()
GATEWAY_TARGET = 0.7  # gateway req/s over direct req/s
HUGE = str(10**9)

# Budgets raised so that neither the gateway's limits nor login throttling answer 429.
RAISED_LIMITS = {
    "rate_limit_per_ip_per_minute": HUGE,
    "rate_limit_per_ip_burst": HUGE,
    "rate_limit_per_user_per_minute": HUGE,
    "rate_limit_per_user_burst": HUGE,
    "login_attempts_per_account": HUGE,
    "login_attempts_per_address": HUGE,
}


@dataclass
class Target:
    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: str | None = None
    connections: int | None = None


# ------------------------------------------------------------------ infrastructure


class Postgres:
    """One fresh database per service on the server of ``admin_dsn``."""

    def __init__(self, admin_dsn: str, prefix: str) -> None:
        self.admin_dsn = admin_dsn
        self.names = {service: f"{prefix}_{service}" for service in SERVICES}
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
            self._run([f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'])
            self.created.append(name)

    def drop(self) -> None:
        for name in self.created:
            try:
                self._run([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])
            except Exception as exc:
                print(f"warning: dropping database {name}: {exc}", file=sys.stderr)
        self.created.clear()

    def url_template(self) -> str:
        """``PANTHERA_DATABASE_URL``: the admin DSN with ``{service}``'s database."""
        parts = urllib.parse.urlsplit(self.admin_dsn)
        prefix = next(iter(self.names.values())).rsplit("_", 1)[0]
        return urllib.parse.urlunsplit(
            ("postgresql+asyncpg", parts.netloc, f"/{prefix}_{{service}}", parts.query, "")
        )


class RabbitVhost:
    """A vhost of the bench's own, so its consumers never meet anyone else's queues."""

    def __init__(self, base_url: str, name: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.name = name
        self.user = urllib.parse.urlsplit(base_url).username or "guest"
        self.created = False

    @staticmethod
    def _ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)

    def create(self) -> str:
        self._ctl("add_vhost", self.name)
        self.created = True
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        return self.base_url + urllib.parse.quote(self.name, safe="")

    def delete(self) -> None:
        if self.created:
            try:
                self._ctl("delete_vhost", self.name)
            except Exception as exc:
                print(f"warning: deleting vhost {self.name}: {exc}", file=sys.stderr)
            self.created = False


# -------------------------------------------------------------------- measuring


def measure(
    wrk: Wrk,
    targets: Sequence[Target],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    watch: Mapping[str, int],
    log: Callable[[str], None],
) -> dict[str, list[WrkResult]]:
    """A warm-up run of each target, then ``rounds`` rounds taking them in turn."""

    def one(target: Target, duration: float) -> WrkResult:
        return wrk.run(
            target.label,
            target.url,
            seconds=duration,
            method=target.method,
            body=target.body,
            headers=target.headers,
            connections=target.connections,
            watch=watch,
        )

    for target in targets:
        if warmup > 0:
            result = one(target, warmup)
            log(f"  warm-up {target.label}: {result.rps:.0f} req/s")
    runs: dict[str, list[WrkResult]] = {t.label: [] for t in targets}
    for index in range(rounds):
        # Rotate the order so no target always runs right after the same one.
        shift = index % len(targets)
        for target in [*targets[shift:], *targets[:shift]]:
            result = one(target, seconds)
            runs[target.label].append(result)
            log(
                f"  round {index + 1} {target.label}: {result.rps:.0f} req/s, "
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"machine busy {result.machine_busy_pct:.0f}%"
            )
    return runs


def hash_cost(rounds: int = 15) -> dict[str, float]:
    """Milliseconds of one argon2id hash and one verify at the platform's settings, alone."""
    from panthera.kernel.security.passwords import PasswordHasher
    from panthera.kernel.settings import Settings

    fields = Settings.model_fields
    params = {
        "memory_cost": int(fields["password_memory_kib"].default),
        "time_cost": int(fields["password_time_cost"].default),
        "parallelism": int(fields["password_parallelism"].default),
    }
    hasher = PasswordHasher(**params)
    stored = hasher.hash(PASSWORD)
    # CPU time of this thread (argon2 runs in it): unlike wall time, it does not
    # grow when the neighbours take the CPU away.
    hashes, verifies, verifies_wall = [], [], []
    for _ in range(rounds):
        start = time.thread_time()
        hasher.hash(PASSWORD)
        hashes.append(time.thread_time() - start)
        start, wall = time.thread_time(), time.perf_counter()
        if not hasher.verify(stored, PASSWORD):
            raise BenchError("argon2 verify failed")
        verifies.append(time.thread_time() - start)
        verifies_wall.append(time.perf_counter() - wall)
    return {
        **{k: float(v) for k, v in params.items()},
        "hash_ms": 1000 * statistics.median(hashes),
        "verify_ms": 1000 * statistics.median(verifies),
        "verify_min_ms": 1000 * min(verifies),
        "verify_wall_ms": 1000 * statistics.median(verifies_wall),
    }


# ---------------------------------------------------------------------- report


def _fmt_cpu(cpu: Mapping[str, float], keep: Sequence[str]) -> str:
    return ", ".join(f"{name} {cpu[name]:.2f}" for name in keep if name in cpu)


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# run_gateway {report['date']}",
        "",
        f"command: `{report['command']}`",
        f"machine: {report['machine']['nproc']} CPUs, {report['machine']['cpu_model']}, "
        f"load before {report['machine']['loadavg'][0]:.2f}",
        f"wrk: -t{report['wrk']['threads']} -c{report['wrk']['connections']} "
        f"-d{report['wrk']['seconds']}s, warm-up {report['wrk']['warmup']}s, "
        f"median of {report['wrk']['rounds']} alternating rounds; only 2xx counted",
        "",
        "| shape | target | req/s (median) | p50 ms | p99 ms | req/s each round "
        "| CPU ms per request | machine busy % |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for phase in report["phases"]:
        for row in phase["results"]:
            lines.append(
                f"| {phase['name']} | {row['label']} | {row['rps']:.0f} | {row['p50_ms']:.1f} "
                f"| {row['p99_ms']:.1f} | {', '.join(f'{x:.0f}' for x in row['rps_each'])} "
                f"| {_fmt_cpu(row['cpu_ms_per_request'], row['cpu_shown'])} "
                f"| {row['machine_busy_pct']:.0f} |"
            )
    lines += ["", "| ratio | value | target | met |", "| --- | ---: | --- | --- |"]
    for ratio in report["ratios"]:
        target = ratio.get("target")
        met = "-" if target is None else ("yes" if ratio["value"] >= target else "**no**")
        target_text = "-" if target is None else f">= {target}"
        lines.append(f"| {ratio['name']} | {ratio['value']:.3g} | {target_text} | {met} |")
    for failure in report.get("failures", []):
        lines += [
            "",
            "**FAILED** phase, its numbers are missing:",
            "",
            "```",
            failure[:3000],
            "```",
        ]
    cost = report.get("hash_cost")
    if cost:
        lines += [
            "",
            f"argon2id alone (m={cost['memory_cost']:.0f} KiB, t={cost['time_cost']:.0f}, "
            f"p={cost['parallelism']:.0f}), CPU time, median of 15: hash {cost['hash_ms']:.1f} ms, "
            f"verify {cost['verify_ms']:.1f} ms (wall {cost['verify_wall_ms']:.1f} ms), so at most "
            f"{report['machine']['nproc'] * 1000 / cost['verify_ms']:.0f} verifies/s on "
            f"{report['machine']['nproc']} CPUs doing nothing else",
        ]
    return "\n".join(lines)


def _row(label: str, runs: Sequence[WrkResult], shown: Sequence[str]) -> dict[str, Any]:
    row = median_result(label, runs)
    row["cpu_shown"] = list(shown)
    return row


# ------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10, help="each measured wrk run")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up run per target")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--login-connections", type=int, default=8)
    parser.add_argument("--login-seconds", type=float, default=6)
    parser.add_argument("--login-rounds", type=int, default=3)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-login", action="store_true")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="server URL")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/", help="broker")
    parser.add_argument("--json", type=Path, help="also write the full results here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the scratch directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    install_signal_handlers()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([Path(sys.executable).as_posix(), *sys.argv]),
        "machine": machine(),
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "login_connections": args.login_connections,
            "login_seconds": args.login_seconds,
        },
        "phases": [],
        "ratios": [],
        "failures": [],
    }
    executable = require_wrk()
    tag = f"bench_{os.getpid()}"

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir(keep=args.keep_logs))
        postgres = Postgres(args.postgres, tag)
        stack.callback(postgres.drop)
        vhost = RabbitVhost(args.amqp, tag)
        stack.callback(vhost.delete)
        redis_db = RedisDb(args.redis)
        stack.callback(redis_db.flush)
        # Entered last, left first: the processes stop before their databases go.
        procs = stack.enter_context(Processes(scratch))
        wrk = Wrk(
            executable,
            scratch,
            threads=args.threads,
            connections=args.connections,
            verbose=args.verbose,
        )

        def guarded(name: str, phase_fn: Callable[[], None]) -> None:
            """Run one phase; a failed one is reported and the run goes on."""
            try:
                phase_fn()
            except BenchError as exc:
                tails = "\n".join(
                    f"--- {child.name} log:\n{child.tail(8)}"
                    for child in procs.children.values()
                    if "error" in child.tail(8).lower()
                )
                report["failures"].append(f"{name}: {exc}\n{tails}".strip())
                log(f"phase {name} FAILED: {str(exc).splitlines()[0]}")

        log("argon2id cost alone")
        report["hash_cost"] = hash_cost()

        hello_port = free_port()
        hello = procs.start(
            "hello",
            [sys.executable, str(BENCH_DIR / "hello.py"), "--port", str(hello_port)],
            clean_env(),
        )
        hello_url = f"http://127.0.0.1:{hello_port}/"

        # ---------------------------------------------------------- distributed
        log("creating databases, vhost, picking a Redis database")
        postgres.create()
        amqp_url = vhost.create()
        redis_url = redis_db.pick()
        ports = {name: free_port() for name in (*SERVICES, "gateway")}
        env = clean_env(
            database_url=postgres.url_template(),
            redis_url=redis_url,
            amqp_url=amqp_url,
            event_transport="rabbitmq",
            service_urls=json.dumps({s: f"http://127.0.0.1:{ports[s]}" for s in SERVICES}),
            log_level="WARNING",
            data_dir=str(scratch / "distributed-data"),
            **RAISED_LIMITS,
        )
        log(f"starting the distributed shape on ports {ports}")
        for name in (*SERVICES, "gateway"):
            procs.start(name, [*panthera_command(), "serve", name, "--port", str(ports[name])], env)
        wait_ready(hello_url, hello)
        for name in (*SERVICES, "gateway"):
            seconds = wait_ready(
                f"http://127.0.0.1:{ports[name]}/readyz", procs.children[name], timeout=90
            )
            log(f"  {name} ready after {seconds:.1f} s")
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        user_id, token = sign_up(gateway, f"{tag}@example.com")
        bearer = {"Authorization": f"Bearer {token}"}
        watch = {name: procs.children[name].pid for name in ("hello", *SERVICES, "gateway")}
        log("measuring hello / direct / gateway")
        runs = measure(
            wrk,
            [
                Target("hello", hello_url),
                Target(
                    "direct: users GET /profiles/{id}",
                    f"http://127.0.0.1:{ports['users']}/profiles/{user_id}",
                    bearer,
                ),
                Target(
                    "gateway: GET /api/v1/users/profiles/{id}",
                    f"{gateway}/api/v1/users/profiles/{user_id}",
                    bearer,
                ),
            ],
            seconds=args.seconds,
            warmup=args.warmup,
            rounds=args.rounds,
            watch=watch,
            log=log,
        )
        labels = list(runs)
        shown = [["hello"], ["users", "auth"], ["gateway", "users", "auth"]]
        rows = [_row(label, runs[label], s) for label, s in zip(labels, shown, strict=True)]
        phase: dict[str, Any] = {"name": "distributed", "results": rows}
        report["phases"].append(phase)
        hello_rps, direct_rps, gateway_rps = (row["rps"] for row in rows)
        direct_cpu, via_cpu = rows[1]["cpu_ms_per_request"], rows[2]["cpu_ms_per_request"]
        report["ratios"] += [
            {"name": "gateway / direct", "value": gateway_rps / direct_rps, "target": 0.7},
            {
                # Direct and gateway runs of one round are minutes apart at most.
                "name": "gateway / direct, median of the per-round ratios",
                "value": statistics.median(
                    g / d for g, d in zip(rows[2]["rps_each"], rows[1]["rps_each"], strict=True)
                ),
            },
            {"name": "direct / hello", "value": direct_rps / hello_rps},
            {"name": "gateway / hello", "value": gateway_rps / hello_rps},
            {
                "name": "CPU per request: gateway process / users process (gateway run)",
                "value": via_cpu["gateway"] / via_cpu["users"],
            },
            {
                # One process per stage: the slower stage bounds the pipeline when each
                # has a core of its own; noise-robust, unlike req/s on a shared box.
                "name": "CPU model of gateway / direct on >= 2 idle cores: "
                "min(1, users CPU direct / max(gateway, users CPU via gateway))",
                "value": min(1.0, direct_cpu["users"] / max(via_cpu["gateway"], via_cpu["users"])),
            },
        ]

        def login_phase() -> None:
            log("measuring logins through the gateway")
            login = Target(
                "gateway: POST /api/v1/users/login",
                f"{gateway}/api/v1/users/login",
                method="POST",
                body=json.dumps({"email": f"{tag}@example.com", "password": PASSWORD}),
                connections=args.login_connections,
            )
            login_runs = measure(
                wrk,
                [login],
                seconds=args.login_seconds,
                warmup=min(args.warmup, 2),
                rounds=args.login_rounds,
                watch=watch,
                log=log,
            )
            row = _row(login.label, login_runs[login.label], ["gateway", "users", "auth"])
            row["label"] += f" (-c{args.login_connections})"
            phase["results"].append(row)
            cost = report["hash_cost"]
            report["ratios"].append(
                {
                    "name": "logins/s x verify ms / 1000 / nproc (CPU share spent in argon2)",
                    "value": row["rps"] * cost["verify_ms"] / 1000 / report["machine"]["nproc"],
                }
            )
            report["ratios"].append(
                {
                    "name": "auth CPU per login / argon2 verify alone",
                    "value": row["cpu_ms_per_request"]["auth"] / cost["verify_ms"],
                }
            )

        if not args.skip_login:
            guarded("login", login_phase)
        for name in ("gateway", *SERVICES):
            procs.stop(name)

        # ------------------------------------------------------------- embedded
        def embedded_phase() -> None:
            port = free_port()
            data_dir = scratch / "embedded-data"
            env = clean_env(log_level="WARNING", **RAISED_LIMITS)
            log("starting the embedded shape")
            embedded = procs.start(
                "embedded",
                [*panthera_command(), "run", "--port", str(port), "--data-dir", str(data_dir)],
                env,
            )
            base = f"http://127.0.0.1:{port}"
            log(f"  embedded ready after {wait_ready(f'{base}/readyz', embedded):.1f} s")
            user_id, token = sign_up(base, f"{tag}-embedded@example.com")
            runs = measure(
                wrk,
                [
                    Target("hello", hello_url),
                    Target(
                        "embedded gateway: GET /api/v1/users/profiles/{id}",
                        f"{base}/api/v1/users/profiles/{user_id}",
                        {"Authorization": f"Bearer {token}"},
                    ),
                ],
                seconds=args.seconds,
                warmup=args.warmup,
                rounds=args.rounds,
                watch={"hello": hello.pid, "embedded": embedded.pid},
                log=log,
            )
            labels = list(runs)
            rows = [
                _row(labels[0], runs[labels[0]], ["hello"]),
                _row(labels[1], runs[labels[1]], ["embedded"]),
            ]
            report["phases"].append({"name": "embedded", "results": rows})
            report["ratios"].append(
                {"name": "embedded gateway / hello", "value": rows[1]["rps"] / rows[0]["rps"]}
            )
            report["ratios"].append(
                {
                    "name": "embedded gateway / distributed gateway (different rounds)",
                    "value": rows[1]["rps"] / gateway_rps,
                }
            )

        if not args.skip_embedded:
            guarded("embedded", embedded_phase)
        log("stopping")

    report["seconds"] = round(time.monotonic() - started, 1)
    text = render(report) + f"\n\nwhole run: {report['seconds']:.0f} s\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if report["failures"]:
        return 2
    missed = [r for r in report["ratios"] if r.get("target") and r["value"] < r["target"]]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
