"""The distributed platform as separate processes: every service and the gateway.

Each service runs ``python -m panthera.cli serve <name>`` on a free port with its
own fresh PostgreSQL database, all of them sharing Redis and a private RabbitMQ
namespace, exactly as in production minus the machines. The processes' logs are
attached to the report of a failing test.
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
STARTUP_SECONDS = float(os.environ.get("PANTHERA_TEST_STARTUP_SECONDS", "45"))
STOP_SECONDS = 15.0
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
    urls: dict[str, str],
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
            "PANTHERA_SERVICE_URLS": json.dumps(urls),
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
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedPlatform]:
    """Every service and the gateway, each its own ``panthera serve`` process.

    Sync and module-scoped: the processes need no event loop of the test's, and
    the tests of a module share one platform (each makes its own accounts).
    """
    _check_servers()
    root = tmp_path_factory.mktemp("distributed")
    data_dir, log_dir = root / "data", root / "logs"
    data_dir.mkdir()
    log_dir.mkdir()
    prefix = unique_prefix()
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), prefix)
    namespace = AmqpNamespace(AMQP_URL, prefix)
    names = [*SERVICE_NAMES, "gateway"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    platform = DistributedPlatform(
        env=_environment(databases=databases, namespace=prefix, data_dir=data_dir, urls=urls),
        data_dir=data_dir,
        log_dir=log_dir,
    )
    try:
        asyncio.run(databases.create(SERVICE_NAMES))
        started = time.monotonic()
        for name in names:
            platform.start(name, ports[name])
        deadline = started + STARTUP_SECONDS
        platform.wait_ready(list(SERVICE_NAMES), deadline)
        # The gateway is ready once every service it routes to is.
        platform.wait_ready(["gateway"], deadline)
        yield platform
    finally:
        platform.stop()
        asyncio.run(databases.drop())
        asyncio.run(namespace.delete())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        platform = getattr(item, "funcargs", {}).get("distributed")
        if isinstance(platform, DistributedPlatform):
            report.sections.append(("panthera process logs", platform.logs()))
    return report
