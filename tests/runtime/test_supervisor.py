"""The supervisor restarts what dies, backs off, and stops with SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from panthera.runtime.registry import SERVICE_NAMES
from panthera.runtime.supervisor import Backoff, ProcessSpec, Supervisor
from panthera.runtime.topology import plan

pytestmark = pytest.mark.timeout(60)


def python(code: str, name: str = "child") -> ProcessSpec:
    return ProcessSpec(
        name=name, argv=[sys.executable, "-c", code], env=dict(os.environ), role=name
    )


async def until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.05)


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    backoff = Backoff(initial_seconds=0.5, max_seconds=4)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1, 2, 4, 4, 4]


async def test_a_process_that_dies_is_restarted_with_backoff(tmp_path: Path) -> None:
    supervisor = Supervisor(
        [python("import sys; print('up', flush=True); sys.exit(3)")],
        log_dir=tmp_path,
        grace_seconds=2,
        backoff=Backoff(initial_seconds=0.1, max_seconds=0.4, stable_seconds=60),
        state_file=tmp_path / "state.json",
    )
    started = time.monotonic()
    await supervisor.start(["child"])
    child = supervisor.children["child"]
    await until(lambda: child.restarts >= 3)
    # 0.1 + 0.2 + 0.4 at least between the four starts.
    assert time.monotonic() - started >= 0.7
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["processes"][0]["restarts"] >= 2
    assert state["processes"][0]["last_exit"] == 3
    await supervisor.stop()
    assert (tmp_path / "child.log").read_text().count("up") >= 3


async def test_stop_kills_what_ignores_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
        name="stubborn",
    )
    polite = python("import time; time.sleep(60)", name="polite")
    supervisor = Supervisor([stubborn, polite], log_dir=tmp_path, grace_seconds=1.0)
    await supervisor.start(["stubborn", "polite"])
    await until(lambda: "ready" in (tmp_path / "stubborn.log").read_text())
    begun = time.monotonic()
    await supervisor.stop()
    took = time.monotonic() - begun
    assert 0.9 <= took < 5
    assert supervisor.children["polite"].last_exit == -15
    assert supervisor.children["stubborn"].last_exit == -9
    # Stopped processes stay stopped.
    await asyncio.sleep(0.3)
    assert all(not child.running for child in supervisor.children.values())


def test_the_topology_runs_every_registered_service_twice_behind_one_gateway() -> None:
    topology = plan(
        host="127.0.0.1",
        gateway_port=9000,
        first_service_port=9101,
        replicas=2,
        environ={"PANTHERA_LOG_LEVEL": "INFO"},
    )
    roles = [spec.role for spec in topology.processes]
    assert sorted(roles) == sorted([*SERVICE_NAMES, *SERVICE_NAMES, "gateway"])
    assert topology.gateway.url == "http://127.0.0.1:9000"
    assert topology.first_replicas == [f"{name}-1" for name in SERVICE_NAMES]
    env = topology.gateway.env
    urls = json.loads(env["PANTHERA_SERVICE_URLS"])
    assert set(urls) == set(SERVICE_NAMES)
    assert all(len(addresses) == 2 for addresses in urls.values())
    ports = [spec.url for spec in topology.processes]
    assert len(set(ports)) == len(ports)
    # Migrations run once, before the processes start.
    assert env["PANTHERA_MIGRATE_ON_START"] == "false"
    assert env["PANTHERA_LOG_LEVEL"] == "INFO"
