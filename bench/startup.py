#!/usr/bin/env python
"""Start-up time and memory of the embedded shape (``panthera run``).

For each of ``--runs`` runs: a fresh data dir, launch ``panthera run``, time until
``/readyz`` answers 200 (that includes creating and migrating every service's
SQLite database), read the CPU time it took and VmRSS/VmHWM from
``/proc/<pid>/status``, stop it. Then once more on the last run's (already
migrated) data dir.

Each series runs in two bytecode set-ups (``--bytecode``):

* ``as-is``: this environment unchanged. The dev venv has no ``__pycache__`` and
  sets ``PYTHONDONTWRITEBYTECODE=1``, so every start compiles every module again;
* ``cached``: a bytecode cache of the bench's own (``PYTHONPYCACHEPREFIX`` in the
  scratch dir, primed by one untimed start), as an installed package or a
  container image would have.

On the last process, a short load: a sign-up, ``--requests`` authenticated GETs
through the gateway and ``--logins`` sign-ins (argon2id takes 19 MiB per hash in
flight), then the memory again. ``bench/startup_phases.py`` gives the split of one
fresh start (import, app build, lifespan start) per set-up.

Targets: ready in under 3 s (median of the fresh runs), resident memory under
300 MB (the peak, VmHWM, after the load).

Run: ``/work/venv/bin/python bench/startup.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BENCH_DIR,
    PASSWORD,
    BenchError,
    Child,
    Processes,
    Wrk,
    clean_env,
    cpu_seconds,
    ensure_panthera_python,
    free_port,
    install_signal_handlers,
    machine,
    memory_mib,
    panthera_command,
    require_wrk,
    scratch_dir,
    sign_up,
    wait_ready,
)

ensure_panthera_python()

READY_TARGET_SECONDS = 3.0
MEMORY_TARGET_MIB = 300e6 / 2**20  # 300 MB = 286.1 MiB
HUGE = str(10**9)
SETTINGS = {
    "log_level": "WARNING",
    # The load comes from one address: keep the gateway's limits out of the way.
    "rate_limit_per_ip_per_minute": HUGE,
    "rate_limit_per_ip_burst": HUGE,
    "rate_limit_per_user_per_minute": HUGE,
    "rate_limit_per_user_burst": HUGE,
    "login_attempts_per_account": HUGE,
    "login_attempts_per_address": HUGE,
}


def bytecode_env(mode: str, scratch: Path) -> dict[str, str]:
    env = clean_env(**SETTINGS)
    if mode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    return env


def launch(
    procs: Processes, name: str, data_dir: Path, env: Mapping[str, str]
) -> tuple[Child, str, dict[str, float]]:
    """Start ``panthera run`` on ``data_dir``: (child, base URL, readings at ready)."""
    port = free_port()
    argv = [*panthera_command(), "run", "--port", str(port), "--data-dir", str(data_dir)]
    start = time.monotonic()
    child = procs.start(name, argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz", child, timeout=120, poll=0.02)
    seconds = time.monotonic() - start
    cpu = cpu_seconds(child.pid)
    mem = memory_mib(child.pid)
    return child, base, {"ready_s": seconds, "cpu_s": cpu, **mem}


def phases(env: Mapping[str, str], data_dir: Path) -> dict[str, Any]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "startup_phases.py"), "--data-dir", str(data_dir)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("PHASES_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"startup_phases failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("PHASES_JSON "))
    result["process_wall_s"] = time.monotonic() - start
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh data dir runs (median)")
    parser.add_argument(
        "--bytecode", choices=["as-is", "cached", "both"], default="both", help="set-ups"
    )
    parser.add_argument("--requests", type=int, default=2000, help="GETs of the short load")
    parser.add_argument("--logins", type=int, default=20, help="sign-ins of the short load")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c for the load")
    parser.add_argument("--json", type=Path, help="also write the full results here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args()


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# startup {report['date']}",
        "",
        f"command: `{report['command']}`",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, load before {m['loadavg'][0]:.2f}",
        "",
        "| bytecode | run | data dir | ready s (wall) | CPU s to ready | VmRSS MiB | VmHWM MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for run in report["runs"]:
        lines.append(
            f"| {run['bytecode']} | {run['name']} | {run['data_dir']} | {run['ready_s']:.2f} "
            f"| {run['cpu_s']:.2f} | {run['VmRSS']:.1f} | {run['VmHWM']:.1f} |"
        )
    load = report["load"]
    lines += [
        "",
        f"Short load on the last process ({load['bytecode']}, existing data dir): "
        f"{load['requests']} GETs of `/api/v1/users/profiles/{{id}}` through the gateway "
        f"({load['requests_per_s']:.0f} req/s, -c{load['connections']}), then "
        f"{load['logins']} logins ({load['logins_per_s']:.1f}/s, -c{load['login_connections']}).",
        "",
        "| when | VmRSS MiB | VmHWM MiB |",
        "| --- | ---: | ---: |",
        f"| after start-up | {load['before']['VmRSS']:.1f} | {load['before']['VmHWM']:.1f} |",
        f"| after the GETs | {load['after_gets']['VmRSS']:.1f} "
        f"| {load['after_gets']['VmHWM']:.1f} |",
        f"| after the logins | {load['after']['VmRSS']:.1f} | {load['after']['VmHWM']:.1f} |",
        "",
        "Split of one fresh start in a fresh interpreter (`bench/startup_phases.py`), "
        "seconds wall / CPU:",
        "",
        "| bytecode | " + " | ".join(report["phase_names"]) + " | whole process |",
        "| --- |" + " ---: |" * (len(report["phase_names"]) + 1),
    ]
    for mode, result in report["phases"].items():
        cells = [
            f"{result['steps'][n]['wall_s']:.2f} / {result['steps'][n]['cpu_s']:.2f}"
            for n in report["phase_names"]
        ]
        lines.append(
            f"| {mode} | " + " | ".join(cells) + f" | {result['process_wall_s']:.2f} / "
            f"{result['total_cpu_s']:.2f} |"
        )
    lines += ["", "| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for check in report["checks"]:
        met = "yes" if check["met"] else "**no**"
        lines.append(f"| {check['name']} | {check['value']} | {check['target']} | {met} |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    install_signal_handlers()
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    modes = ["as-is", "cached"] if args.bytecode == "both" else [args.bytecode]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([Path(sys.executable).as_posix(), *sys.argv]),
        "machine": machine(),
        "runs": [],
        "phases": {},
    }
    executable = require_wrk()

    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir(keep=args.keep_logs))
        procs = stack.enter_context(Processes(scratch))
        for mode in modes:
            env = bytecode_env(mode, scratch)
            if mode == "cached":
                log("cached: priming the bytecode cache (untimed start)")
                launch(procs, "prime", scratch / "data-prime", env)
                procs.stop("prime")
            data_dir = scratch
            for index in range(args.runs):
                data_dir = scratch / f"data-{mode}-{index + 1}"
                name = f"fresh-{index + 1}"
                _child, _base, readings = launch(procs, f"{mode}-{name}", data_dir, env)
                procs.stop(f"{mode}-{name}")
                report["runs"].append(
                    {"bytecode": mode, "name": name, "data_dir": "fresh", **readings}
                )
                ready, cpu = readings["ready_s"], readings["cpu_s"]
                log(f"{mode} {name}: ready {ready:.2f} s, CPU {cpu:.2f} s")
            child, base, readings = launch(procs, f"{mode}-existing", data_dir, env)
            report["runs"].append(
                {"bytecode": mode, "name": "existing", "data_dir": "existing", **readings}
            )
            log(f"{mode} existing: ready {readings['ready_s']:.2f} s")
            if mode != modes[-1]:
                procs.stop(f"{mode}-existing")
                continue

            log("short load")
            before = memory_mib(child.pid)
            email = "startup-bench@example.com"
            user_id, token = sign_up(base, email)
            wrk = Wrk(executable, scratch, threads=1, connections=args.connections)
            gets = wrk.run(
                "GET profile",
                f"{base}/api/v1/users/profiles/{user_id}",
                seconds=120,
                headers={"Authorization": f"Bearer {token}"},
                limit=args.requests,
            )
            after_gets = memory_mib(child.pid)
            login_connections = min(args.connections, 8)
            logins = wrk.run(
                "login",
                f"{base}/api/v1/users/login",
                seconds=120,
                method="POST",
                body=json.dumps({"email": email, "password": PASSWORD}),
                connections=login_connections,
                limit=args.logins,
            )
            after = memory_mib(child.pid)
            report["load"] = {
                "bytecode": mode,
                "requests": gets.ok,
                "requests_per_s": gets.rps,
                "connections": args.connections,
                "logins": logins.ok,
                "logins_per_s": logins.rps,
                "login_connections": login_connections,
                "before": before,
                "after_gets": after_gets,
                "after": after,
            }
            log(f"after load: VmRSS {after['VmRSS']:.1f} MiB, VmHWM {after['VmHWM']:.1f} MiB")
            procs.stop(f"{mode}-existing")

        for mode in modes:
            log(f"{mode}: start-up split")
            report["phases"][mode] = phases(
                bytecode_env(mode, scratch), scratch / f"data-phases-{mode}"
            )
        report["phase_names"] = list(next(iter(report["phases"].values()))["steps"])

    checks = []
    for mode in modes:
        mine = [r for r in report["runs"] if r["bytecode"] == mode]
        fresh = [r["ready_s"] for r in mine if r["name"] != "existing"]
        cpu = [r["cpu_s"] for r in mine if r["name"] != "existing"]
        existing = next(r["ready_s"] for r in mine if r["name"] == "existing")
        ready = statistics.median(fresh)
        checks += [
            {
                "name": f"ready, fresh data dir, bytecode {mode} (median of {len(fresh)})",
                "value": f"{ready:.2f} s (min {min(fresh):.2f}, max {max(fresh):.2f}; "
                f"CPU {statistics.median(cpu):.2f} s)",
                "target": f"< {READY_TARGET_SECONDS:g} s",
                "met": ready < READY_TARGET_SECONDS,
            },
            {
                "name": f"ready, existing data dir, bytecode {mode}",
                "value": f"{existing:.2f} s",
                "target": f"< {READY_TARGET_SECONDS:g} s",
                "met": existing < READY_TARGET_SECONDS,
            },
        ]
    load = report["load"]
    peak = max([r["VmHWM"] for r in report["runs"]] + [load["after"]["VmHWM"]])
    checks += [
        {
            "name": "VmRSS after load",
            "value": f"{load['after']['VmRSS']:.1f} MiB",
            "target": "< 300 MB (286.1 MiB)",
            "met": load["after"]["VmRSS"] < MEMORY_TARGET_MIB,
        },
        {
            "name": "peak VmHWM, all runs and the load",
            "value": f"{peak:.1f} MiB",
            "target": "< 300 MB (286.1 MiB)",
            "met": peak < MEMORY_TARGET_MIB,
        },
    ]
    report["checks"] = checks
    report["seconds"] = round(time.monotonic() - started, 1)
    text = render(report) + f"\n\nwhole run: {report['seconds']:.0f} s\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    missed = [c for c in checks if not c["met"]]
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
