"""Keeps a set of processes running: starts them, restarts one that dies, stops them all.

Knows nothing of services: what to run comes as :class:`ProcessSpec` from the
topology (``runtime/topology.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("panthera.supervisor")


@dataclass(frozen=True)
class ProcessSpec:
    """One process to keep running."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    # What it is an instance of (a service name, or "gateway").
    role: str
    # Where it answers /readyz; None when it serves no HTTP.
    url: str | None = None


@dataclass
class Child:
    spec: ProcessSpec
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a process that died, doubling while it keeps dying."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    # A process that ran at least this long counts as having started well: its
    # next crash is treated as a first one again.
    stable_seconds: float = 30.0

    def delay(self, consecutive_failures: int) -> float:
        exponent = max(0, consecutive_failures - 1)
        return float(min(self.max_seconds, self.initial_seconds * 2**exponent))


class NotReady(Exception):
    """Some processes did not answer /readyz in time."""


class Supervisor:
    """Starts processes, restarts the ones that exit, stops them with a grace period.

    Each process runs in its own session (a terminal's Ctrl-C reaches only the
    supervisor, which then stops them in order) and writes to its own log file.
    """

    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        *,
        log_dir: Path,
        grace_seconds: float = 20.0,
        backoff: Backoff | None = None,
        state_file: Path | None = None,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children = {spec.name: Child(spec, log_dir / f"{spec.name}.log") for spec in specs}
        self.grace_seconds = grace_seconds
        self.backoff = backoff or Backoff()
        self.state_file = state_file
        self.ready = False
        self._stopping = asyncio.Event()

    async def start(self, names: Iterable[str]) -> None:
        """Launch these processes and watch over them from now on."""
        for name in names:
            child = self.children[name]
            if child.watcher is None:
                await self._spawn(child)
                child.watcher = asyncio.create_task(self._watch(child), name=f"watch-{name}")
        self.write_state()

    async def wait_ready(self, names: Iterable[str], timeout_seconds: float) -> None:
        """Return once each process answers 200 on /readyz; raise :class:`NotReady` after."""
        waiting = {name for name in names if self.children[name].spec.url}
        last: dict[str, str] = {}
        deadline = time.monotonic() + timeout_seconds
        async with httpx.AsyncClient(timeout=2.0) as client:
            while waiting:
                for name in sorted(waiting):
                    url = self.children[name].spec.url
                    try:
                        response = await client.get(f"{url}/readyz")
                    except httpx.HTTPError as exc:
                        last[name] = repr(exc)
                        continue
                    if response.status_code == 200:
                        waiting.discard(name)
                    else:
                        last[name] = f"{response.status_code} {response.text[:200]}"
                if waiting and time.monotonic() > deadline:
                    raise NotReady(
                        ", ".join(f"{n} ({last.get(n, 'no answer')})" for n in sorted(waiting))
                    )
                if waiting:
                    await asyncio.sleep(0.2)

    async def stop(self, order: Sequence[Sequence[str]] = ()) -> None:
        """Stop every process: SIGTERM, then SIGKILL what outlives the grace period.

        ``order`` gives groups stopped one after the other (e.g. the gateway before
        the services it still needs to finish its requests); processes not named
        are stopped last, together.
        """
        self._stopping.set()
        named = {name for group in order for name in group}
        groups = [list(group) for group in order]
        groups.append([name for name in self.children if name not in named])
        deadline = time.monotonic() + self.grace_seconds
        for group in groups:
            await self._terminate([self.children[name] for name in group], deadline)
        for child in self.children.values():
            if child.watcher is not None:
                child.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.watcher
                child.watcher = None
        self.write_state()

    async def _terminate(self, children: list[Child], deadline: float) -> None:
        for child in children:
            _signal(child, signal.SIGTERM)
        for child in children:
            if child.process is None:
                continue
            try:
                await asyncio.wait_for(
                    child.process.wait(), timeout=max(0.1, deadline - time.monotonic())
                )
            except TimeoutError:
                log.warning(
                    "process outlived the grace period: killing it",
                    extra={"child": child.spec.name, "grace_seconds": self.grace_seconds},
                )
                _signal(child, signal.SIGKILL)
                await child.process.wait()

    async def _spawn(self, child: Child) -> None:
        with child.log_path.open("ab") as output:
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.argv,
                env=child.spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        child.started_at = time.monotonic()
        log.info(
            "process started",
            extra={"child": child.spec.name, "pid": child.process.pid, "url": child.spec.url},
        )

    async def _watch(self, child: Child) -> None:
        failures = 0
        while True:
            assert child.process is not None
            code = await child.process.wait()
            child.last_exit = code
            if self._stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            failures = 1 if ran >= self.backoff.stable_seconds else failures + 1
            delay = self.backoff.delay(failures)
            log.warning(
                "process exited: restarting it",
                extra={
                    "child": child.spec.name,
                    "exit_code": code,
                    "ran_seconds": round(ran, 1),
                    "restart_in_seconds": delay,
                },
            )
            self.write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                return
            child.restarts += 1
            await self._spawn(child)
            self.write_state()

    def state(self) -> dict[str, Any]:
        """What runs where, for operators and tests: pid, address, restarts, log."""
        return {
            "ready": self.ready,
            "processes": [
                {
                    "name": child.spec.name,
                    "role": child.spec.role,
                    "url": child.spec.url,
                    "pid": child.process.pid if child.running and child.process else None,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit,
                    "log": str(child.log_path),
                }
                for child in self.children.values()
            ],
        }

    def write_state(self) -> None:
        """Replace the state file (atomically: readers never see half of it)."""
        if self.state_file is None:
            return
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.state(), indent=2) + "\n")
        scratch.replace(self.state_file)


def _signal(child: Child, signum: signal.Signals) -> None:
    if not child.running or child.process is None:
        return
    # The whole session: whatever the process itself started goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)
