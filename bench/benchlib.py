"""What the bench scripts share: processes, ports, readiness, /proc readings and wrk.

Every process is started through :class:`Processes`, which stops it on the way out
(SIGTERM, then SIGKILL) whatever happens; SIGTERM and SIGINT to the bench script
itself unwind through the same ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PASSWORD = "Bench-Cheetah-42-Password"  # long and not on the common-password list


class BenchError(RuntimeError):
    """A measurement that cannot be trusted (non-2xx, socket errors) or a failed step."""


# --------------------------------------------------------------------------- setup


def install_signal_handlers() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally`` blocks stop the children."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


def ensure_panthera_python() -> None:
    """Re-run this script with a Python that has Panthera installed, if this one has not.

    So ``python bench/<script>.py`` works from any shell: the repository's ``.venv``
    (``scripts/bootstrap``) is tried first, then the dev virtualenv ``/work/venv``.
    """
    try:
        import panthera  # noqa: F401
    except ImportError:
        pass
    else:
        return
    for candidate in (ROOT / ".venv" / "bin" / "python", Path("/work/venv/bin/python")):
        # A venv's python is a symlink to the base interpreter: compare environments.
        if (
            not candidate.exists()
            or candidate.parent.parent.resolve() == Path(sys.prefix).resolve()
        ):
            continue
        probe = subprocess.run(
            [str(candidate), "-c", "import panthera, uvicorn"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            print(f"(re-running with {candidate})", file=sys.stderr)
            os.execv(str(candidate), [str(candidate), *sys.argv])  # noqa: S606
    raise SystemExit(
        f"{sys.executable} cannot import panthera: run with the project's virtualenv, "
        "e.g. /work/venv/bin/python or .venv/bin/python (scripts/bootstrap makes it)"
    )


def panthera_command() -> list[str]:
    """``panthera`` of the interpreter running the bench (its console script if present)."""
    script = Path(sys.executable).parent / "panthera"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "panthera.cli"]


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk not found: apt-get update && apt-get install -y wrk")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**panthera: str) -> dict[str, str]:
    """This environment without any ``PANTHERA_*`` variable, plus ``panthera`` given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTHERA_")}
    env.update({f"PANTHERA_{k.upper()}": v for k, v in panthera.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


# ----------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Processes:
    """The children of one bench run; :meth:`stop_all` ends each one by its pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only us
            )
        child = Child(name, proc, log)
        self.children[name] = child
        return child

    def stop(self, name: str, grace_seconds: float = 15.0) -> None:
        child = self.children.pop(name, None)
        if child is None:
            return
        _terminate(child.proc, grace_seconds)

    def stop_all(self) -> None:
        # Newest first: the gateway before the services it calls.
        for name in reversed(list(self.children)):
            try:
                self.stop(name)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {name}: {exc}", file=sys.stderr)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _terminate(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class RedisDb:
    """An empty logical Redis database (8 to 14), flushed when the run ends.

    Non-empty databases are skipped, so a bench never flushes anyone else's keys
    (15, the usual choice of test suites, is left alone too).
    """

    def __init__(self, host_url: str) -> None:
        self.host_url = host_url.rstrip("/")
        self.url = ""

    def pick(self) -> str:
        import redis

        for index in range(8, 15):
            url = f"{self.host_url}/{index}"
            client = redis.Redis.from_url(url)
            try:
                if client.dbsize() == 0:
                    self.url = url
                    return url
            finally:
                client.close()
        raise BenchError(f"no empty Redis database among 8..14 on {self.host_url}")

    def flush(self) -> None:
        if not self.url:
            return
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        except Exception as exc:
            print(f"warning: flushing {self.url}: {exc}", file=sys.stderr)
        finally:
            client.close()


# ------------------------------------------------------------------------- HTTP


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One request with the standard library: (status, parsed JSON body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_ready(url: str, child: Child | None, timeout: float = 60.0, poll: float = 0.05) -> float:
    """Seconds until ``url`` answers 200; raises if the child dies or time runs out."""
    start = time.monotonic()
    while True:
        if child is not None and child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} before {url} was ready:\n"
                + child.tail()
            )
        with contextlib.suppress(OSError, ValueError):
            status, _ = http("GET", url, timeout=2.0)
            if status == 200:
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            tail = child.tail() if child is not None else ""
            raise BenchError(f"{url} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(poll)


def sign_up(base: str, email: str, *, timeout: float = 60.0) -> tuple[str, str]:
    """Register ``email`` through the gateway at ``base`` and sign in: (user id, token).

    Registration reaches the auth service as an event, so the first logins may be
    refused until it has arrived; they are retried until ``timeout``.
    """
    status, user = http(
        "POST",
        f"{base}/api/v1/users/register",
        body={"email": email, "password": PASSWORD, "firstName": "Bench", "lastName": "Mark"},
    )
    if status != 201:
        raise BenchError(f"register answered {status}: {user}")
    deadline = time.monotonic() + timeout
    while True:
        status, answer = http(
            "POST", f"{base}/api/v1/users/login", body={"email": email, "password": PASSWORD}
        )
        if status == 200:
            return str(user["id"]), str(answer["accessToken"])
        if time.monotonic() > deadline:
            raise BenchError(f"login answered {status}: {answer}")
        time.sleep(0.2)


# ------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = parts[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + steal + idle + iowait


# -------------------------------------------------------------------------- wrk

_LUA = r"""
wrk.method = "{method}"
{body}
{headers}
local threads = {{}}
local limit = {limit}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  first_bad = 0
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == 0 then first_bad = status end
  end
  if limit > 0 and ok + bad == limit then
    -- wrk's main thread sleeps for the whole -d; the bench answers this with SIGINT.
    io.write("BENCH_LIMIT\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local ok_all, bad_all, first = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_all = ok_all + t:get("ok")
    bad_all = bad_all + t:get("bad")
    if first == 0 then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"ok": %.0f, "bad": %.0f, "first_bad": %.0f, "requests": %.0f, ' ..
    '"duration_us": %.0f, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, ' ..
    '"mean_us": %.1f, "max_us": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, ' ..
    '"status": %.0f, "timeout": %.0f}}\n',
    ok_all, bad_all, first, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


@dataclass
class WrkResult:
    label: str
    ok: int
    bad: int
    seconds: float
    rps: float  # 2xx answers per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: dict[str, int]
    # CPU milliseconds each watched process spent per 2xx answer.
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0
    machine_steal_pct: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Wrk:
    """Runs wrk with a generated Lua script that counts 2xx answers itself."""

    executable: str
    scratch: Path
    threads: int = 1
    connections: int = 32
    timeout_seconds: float = 10.0
    verbose: bool = False
    _scripts: int = 0

    def run(
        self,
        label: str,
        url: str,
        *,
        seconds: float,
        method: str = "GET",
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        connections: int | None = None,
        limit: int = 0,
        watch: Mapping[str, int] | None = None,
        check: bool = True,
    ) -> WrkResult:
        """Load ``url`` for ``seconds`` (or until ``limit`` answers per thread).

        ``watch`` names processes whose CPU time per 2xx answer is measured. With
        ``check``, any non-2xx answer or socket error raises :class:`BenchError`.
        """
        all_headers = dict(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        script = _LUA.format(
            method=method,
            body=f"wrk.body = {_lua_string(body)}" if body is not None else "",
            headers="\n".join(
                # Spaces keep ``[ [==[`` from reading as a long bracket.
                f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"
                for k, v in all_headers.items()
            ),
            limit=limit,
        )
        self._scripts += 1
        path = self.scratch / f"wrk-{self._scripts}.lua"
        path.write_text(script)
        argv = [
            self.executable,
            f"-t{self.threads}",
            f"-c{connections or self.connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={self.timeout_seconds:g}s",
            "--latency",
            "-s",
            str(path),
            url,
        ]
        watch = dict(watch or {})
        cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
        ticks_before = machine_ticks()
        done = _run_wrk(argv, seconds + 60, stop_at_limit=limit > 0)
        ticks_after = machine_ticks()
        cpu_after = {name: cpu_seconds(pid) for name, pid in watch.items()}
        if self.verbose:
            print(done.stdout, file=sys.stderr)
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
        if done.returncode != 0 or line is None:
            raise BenchError(
                f"{label}: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        seconds_run = raw["duration_us"] / 1e6
        ok = int(raw["ok"])
        errors = {k: int(raw[k]) for k in ("connect", "read", "write", "timeout")}
        busy = ticks_after[0] - ticks_before[0]
        steal = ticks_after[1] - ticks_before[1]
        total = max(1, ticks_after[2] - ticks_before[2])
        result = WrkResult(
            label=label,
            ok=ok,
            bad=int(raw["bad"]),
            seconds=seconds_run,
            rps=ok / seconds_run if seconds_run else 0.0,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            mean_ms=raw["mean_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            socket_errors=errors,
            cpu_ms_per_request={
                name: 1000 * (cpu_after[name] - cpu_before[name]) / max(ok, 1) for name in watch
            },
            machine_busy_pct=100 * busy / total,
            machine_steal_pct=100 * steal / total,
        )
        if check and (result.bad or any(errors.values()) or ok == 0):
            raise BenchError(
                f"{label}: {result.ok} 2xx, {result.bad} non-2xx "
                f"(first status {int(raw['first_bad'])}), socket errors {errors}\n"
                f"{done.stdout}"
            )
        return result


def _run_wrk(
    argv: Sequence[str], timeout: float, *, stop_at_limit: bool
) -> subprocess.CompletedProcess[str]:
    """Run wrk; with ``stop_at_limit``, SIGINT it (it then reports) once the limit is hit."""
    if not stop_at_limit:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("BENCH_LIMIT"):
                proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, returncode, "".join(lines), stderr)


def median_result(label: str, runs: Sequence[WrkResult]) -> dict[str, Any]:
    """The median of each figure over repeated runs of one target."""

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    names = runs[0].cpu_ms_per_request.keys()
    return {
        "label": label,
        "runs": len(runs),
        "rps": med([r.rps for r in runs]),
        "rps_each": [round(r.rps, 1) for r in runs],
        "p50_ms": med([r.p50_ms for r in runs]),
        "p99_ms": med([r.p99_ms for r in runs]),
        "ok_total": sum(r.ok for r in runs),
        "cpu_ms_per_request": {n: med([r.cpu_ms_per_request[n] for r in runs]) for n in names},
        "machine_busy_pct": med([r.machine_busy_pct for r in runs]),
        "machine_steal_pct": med([r.machine_steal_pct for r in runs]),
    }


@contextlib.contextmanager
def scratch_dir(keep: bool = False) -> Iterator[Path]:
    """A temporary directory for logs, data dirs and Lua scripts."""
    path = Path(tempfile.mkdtemp(prefix="panthera-bench-"))
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        if failed or keep:
            print(f"logs kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
