"""The distributed platform as ``panthera up`` runs it: every service and the gateway.

``panthera up`` starts two ``panthera serve`` processes of every service on free
ports, and the gateway in front of them, each service with its own fresh
PostgreSQL database, all of them sharing Redis and a private RabbitMQ namespace,
exactly as in production minus the machines. Its log and the processes' logs are
attached to the report of a failing test.

``DistributedPlatform`` starts the processes one by one instead, for tests that
stand something between them and a server (a broker proxy they cut at will).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from panthera.runtime.registry import SERVICE_NAMES
from tests.integration.conftest import (
    AMQP_URL,
    DATABASE_URL,
    REDIS_URL,
    AmqpNamespace,
    PostgresServer,
    ServiceDatabases,
    masked,
    unique_prefix,
)

# How long every process together may take to answer /readyz. Generous because a
# loaded CI box can take many seconds just to import the application.
STARTUP_SECONDS = float(os.environ.get("PANTHERA_TEST_STARTUP_SECONDS", "90"))
STOP_SECONDS = 15.0
GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 120


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (held together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class UpPlatform:
    """``panthera up`` running the topology, its environment, and where the mail goes."""

    env: dict[str, str]
    data_dir: Path
    run_dir: Path
    up_log: Path
    popen: subprocess.Popen[bytes] | None = None

    def topology(self) -> dict[str, Any]:
        """What ``panthera up`` says runs where (its ``topology.json``)."""
        state: dict[str, Any] = json.loads((self.run_dir / "topology.json").read_text())
        return state

    def processes(self, role: str | None = None) -> list[dict[str, Any]]:
        found = self.topology()["processes"]
        return [p for p in found if role is None or p["role"] == role]

    def process(self, name: str) -> dict[str, Any]:
        return next(p for p in self.processes() if p["name"] == name)

    @property
    def gateway_url(self) -> str:
        url: str = self.process("gateway")["url"]
        return url

    def url_of(self, service: str) -> str:
        """The address of the service's first replica."""
        url: str = self.processes(service)[0]["url"]
        return url

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "outbox"

    async def cli_in_background(self, *args: str) -> asyncio.subprocess.Process:
        """Start a ``panthera`` command with the platform's environment; read it later."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "panthera.cli",
            *args,
            env=self.env,
            cwd=self.data_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    def start(self) -> None:
        with self.up_log.open("wb") as log:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "panthera.cli",
                    "up",
                    "--port",
                    str(free_ports(1)[0]),
                    "--first-service-port",
                    "0",
                    "--replicas",
                    "2",
                    "--run-dir",
                    str(self.run_dir),
                    "--grace-seconds",
                    str(GRACE_SECONDS),
                    "--ready-timeout",
                    str(STARTUP_SECONDS),
                ],
                env=self.env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the terminal reaches pytest only,
                # and the fixture stops the platform in order.
                start_new_session=True,
            )

    def logs(self) -> str:
        def tail(path: Path) -> str:
            try:
                text = path.read_text(errors="replace")
            except OSError as exc:
                return f"(no log: {exc})"
            return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])

        parts = [f"===== panthera up: last lines of {self.up_log} =====\n{tail(self.up_log)}"]
        for log_path in sorted((self.run_dir / "logs").glob("*.log")):
            parts.append(f"===== {log_path.stem}: last lines of {log_path} =====\n{tail(log_path)}")
        return "\n".join(parts)

    def wait_ready(self) -> None:
        """Until ``panthera up`` says every process is ready; fail with the logs otherwise."""
        deadline = time.monotonic() + STARTUP_SECONDS + 30
        state_file = self.run_dir / "topology.json"
        assert self.popen is not None
        while True:
            if self.popen.poll() is not None:
                pytest.fail(
                    f"`panthera up` exited with {self.popen.returncode} before it was ready\n"
                    f"{self.logs()}"
                )
            if state_file.exists() and self.topology()["ready"]:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"`panthera up` not ready within {STARTUP_SECONDS}s\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM ``panthera up`` (which stops its processes), SIGKILL it if it hangs."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=GRACE_SECONDS + STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        # Whatever it could not stop must not outlive the test run.
        with contextlib.suppress(OSError, ValueError):
            for process in self.processes():
                if process["pid"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process["pid"], signal.SIGKILL)


@dataclass
class Process:
    name: str
    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class DistributedPlatform:
    """The running processes, their environment, and where the mail goes."""

    env: dict[str, str]
    data_dir: Path
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return self.processes["gateway"].url

    def url_of(self, service: str) -> str:
        return self.processes[service].url

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "outbox"

    async def cli_in_background(self, *args: str) -> asyncio.subprocess.Process:
        """Start a ``panthera`` command with the platform's environment; read it later."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "panthera.cli",
            *args,
            env=self.env,
            cwd=self.data_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    def start(self, name: str, port: int) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "panthera.cli",
                    "serve",
                    name,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=self.env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the terminal reaches pytest only,
                # and the fixture stops the processes in order.
                start_new_session=True,
            )
        self.processes[name] = Process(name, f"http://127.0.0.1:{port}", log_path, popen)

    def logs(self) -> str:
        parts = []
        for process in self.processes.values():
            status = process.popen.poll()
            state = "running" if status is None else f"exited with {status}"
            parts.append(
                f"===== {process.name} ({process.url}, {state}): last lines of "
                f"{process.log_path} =====\n{process.log_tail()}"
            )
        return "\n".join(parts)

    def wait_ready(self, names: list[str], deadline: float) -> None:
        """Poll each process's /readyz until it answers 200; fail with the logs otherwise."""
        waiting = list(names)
        last: dict[str, str] = {}
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                for name in list(waiting):
                    process = self.processes[name]
                    if process.popen.poll() is not None:
                        pytest.fail(
                            f"`panthera serve {name}` exited with {process.popen.returncode} "
                            f"before it was ready\n{self.logs()}"
                        )
                    try:
                        response = client.get(f"{process.url}/readyz")
                    except httpx.HTTPError as exc:
                        last[name] = repr(exc)
                        continue
                    if response.status_code == 200:
                        waiting.remove(name)
                    else:
                        last[name] = f"{response.status_code} {response.text}"
                if waiting and time.monotonic() > deadline:
                    pytest.fail(
                        f"not ready within {STARTUP_SECONDS}s: "
                        + ", ".join(f"{n} ({last.get(n, 'no answer')})" for n in waiting)
                        + f"\n{self.logs()}"
                    )
                if waiting:
                    time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL whatever has not exited in time."""
        for process in self.processes.values():
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes.values():
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)


def _environment(
    *,
    databases: ServiceDatabases,
    namespace: str,
    data_dir: Path,
    urls: dict[str, str] | None = None,
) -> dict[str, str]:
    # Nothing from the developer's own PANTHERA_* settings leaks in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PANTHERA_")}
    env.update(
        {
            "PANTHERA_ENVIRONMENT": "test",
            "PANTHERA_DATA_DIR": str(data_dir),
            "PANTHERA_DATABASE_URL": databases.url_template,
            "PANTHERA_REDIS_URL": REDIS_URL,
            "PANTHERA_AMQP_URL": AMQP_URL,
            "PANTHERA_AMQP_NAMESPACE": namespace,
            "PANTHERA_EVENT_TRANSPORT": "rabbitmq",
            "PANTHERA_INTERNAL_TOKEN": secrets.token_urlsafe(32),
            "PANTHERA_LOG_JSON": "false",
            "PANTHERA_LOG_LEVEL": "INFO",
            "PANTHERA_RELAY_POLL_SECONDS": "0.2",
            # Every process's pool on one PostgreSQL, beside other tests' platforms.
            "PANTHERA_DATABASE_POOL_SIZE": "2",
            "PANTHERA_DATABASE_MAX_OVERFLOW": "3",
            # Every request comes from 127.0.0.1: the per-address budgets would
            # otherwise throttle the test itself.
            "PANTHERA_RATE_LIMIT_PER_IP_PER_MINUTE": "100000",
            "PANTHERA_RATE_LIMIT_PER_IP_BURST": "10000",
            "PANTHERA_LOGIN_ATTEMPTS_PER_ADDRESS": "1000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Processes started one by one are told where the others are; panthera up says itself.
    if urls is not None:
        env["PANTHERA_SERVICE_URLS"] = json.dumps(urls)
    return env


def _check_servers() -> None:
    """Fail at once, with the address, when a server the platform needs is missing."""

    async def check() -> None:
        import aio_pika
        import redis.asyncio as aioredis

        conn = await PostgresServer(DATABASE_URL).connect()
        await conn.close()
        client = aioredis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            await client.ping()
        except Exception as exc:
            pytest.fail(
                f"Redis is required at {masked(REDIS_URL)} (PANTHERA_TEST_REDIS_URL): {exc!r}"
            )
        finally:
            await client.aclose()
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=5)
        except Exception as exc:
            pytest.fail(
                f"RabbitMQ is required at {masked(AMQP_URL)} (PANTHERA_TEST_AMQP_URL): {exc!r}"
            )
        await connection.close()

    asyncio.run(check())


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpPlatform]:
    """The distributed shape as ``panthera up`` runs it: two replicas of every service.

    Sync and module-scoped: the processes need no event loop of the test's, and
    the tests of a module share one platform (each makes its own accounts).
    """
    _check_servers()
    root = tmp_path_factory.mktemp("distributed")
    data_dir = root / "data"
    data_dir.mkdir()
    prefix = unique_prefix()
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), prefix)
    namespace = AmqpNamespace(AMQP_URL, prefix)
    env = _environment(databases=databases, namespace=prefix, data_dir=data_dir)
    # Thirteen processes share the test server (and CI's other tests) with small pools.
    env.update({"PANTHERA_DATABASE_POOL_SIZE": "2", "PANTHERA_DATABASE_MAX_OVERFLOW": "3"})
    platform = UpPlatform(
        env=env,
        data_dir=data_dir,
        run_dir=root / "run",
        up_log=root / "up.log",
    )
    try:
        asyncio.run(databases.create(SERVICE_NAMES))
        platform.start()
        platform.wait_ready()
        yield platform
    finally:
        platform.stop()
        asyncio.run(databases.drop())
        asyncio.run(namespace.delete())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            platform = getattr(value, "platform", value)
            if isinstance(platform, (UpPlatform, DistributedPlatform)):
                report.sections.append(("panthera process logs", platform.logs()))
                break
    return report
