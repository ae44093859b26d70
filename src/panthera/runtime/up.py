"""``panthera up``: migrate once, start the topology in order, keep it running, stop it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from panthera.kernel.settings import Settings
from panthera.runtime.platform import Platform
from panthera.runtime.registry import SERVICE_NAMES
from panthera.runtime.supervisor import Backoff, NotReady, Supervisor
from panthera.runtime.topology import GATEWAY, Topology

log = logging.getLogger("panthera.up")


async def migrate_all(settings: Settings) -> None:
    """Every service's database to its newest schema, once, before any replica starts."""
    platform = Platform(settings, SERVICE_NAMES)
    try:
        await platform.migrate()
    finally:
        for runtime in platform.runtimes.values():
            await runtime.database.dispose()


def prometheus_targets(topology: Topology) -> list[dict[str, object]]:
    """Every process as a Prometheus file_sd target group, labelled with its service."""
    groups: list[dict[str, object]] = []
    for spec in topology.processes:
        if spec.url is None:
            continue
        groups.append(
            {
                "targets": [urlsplit(spec.url).netloc],
                "labels": {"service": spec.role, "process": spec.name},
            }
        )
    return groups


async def run(
    settings: Settings,
    topology: Topology,
    *,
    run_dir: Path,
    grace_seconds: float,
    ready_timeout_seconds: float,
    migrate: bool = True,
    backoff: Backoff | None = None,
    on_ready: Callable[[Supervisor], None] | None = None,
) -> int:
    """Run the topology until SIGINT or SIGTERM; the exit status.

    Readiness comes in two rounds: one replica of each service, then the other
    replicas and the gateway (whose /readyz needs every service).
    """
    if migrate:
        await migrate_all(settings)
        log.info("databases migrated", extra={"services": list(SERVICE_NAMES)})
    supervisor = Supervisor(
        topology.processes,
        log_dir=run_dir / "logs",
        grace_seconds=grace_seconds,
        backoff=backoff,
        state_file=run_dir / "topology.json",
    )
    # For a Prometheus on this machine: file_sd_configs with this file finds every process.
    (run_dir / "prometheus-targets.json").write_text(
        json.dumps(prometheus_targets(topology), indent=2) + "\n"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    status = 0
    try:
        first = topology.first_replicas
        rest = [spec.name for spec in topology.processes if spec.name not in first]
        starting = asyncio.create_task(_start(supervisor, first, rest, ready_timeout_seconds))
        stopped = asyncio.create_task(stop.wait())
        done, _pending = await asyncio.wait(
            {starting, stopped}, return_when=asyncio.FIRST_COMPLETED
        )
        if starting in done:
            starting.result()
            supervisor.ready = True
            supervisor.write_state()
            log.info("platform ready", extra={"gateway": topology.gateway.url})
            if on_ready is not None:
                on_ready(supervisor)
            await stopped
        else:
            starting.cancel()
    except NotReady as exc:
        log.error("platform not ready in time", extra={"waiting_for": str(exc)})
        status = 1
    finally:
        log.info("stopping the platform", extra={"grace_seconds": grace_seconds})
        # The gateway first, so it finishes its requests while the services still answer.
        await supervisor.stop(order=[[spec.name for spec in topology.named(GATEWAY)]])
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return status


async def _start(
    supervisor: Supervisor, first: list[str], rest: list[str], timeout_seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    await supervisor.start(first)
    await supervisor.wait_ready(first, deadline - loop.time())
    await supervisor.start(rest)
    await supervisor.wait_ready(rest, max(1.0, deadline - loop.time()))
