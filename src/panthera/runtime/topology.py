"""The distributed shape on one machine: which ``panthera serve`` processes, on which ports."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from panthera.kernel.settings import EventTransportKind, Settings
from panthera.runtime.registry import SERVICE_NAMES
from panthera.runtime.supervisor import ProcessSpec

GATEWAY = "gateway"


@dataclass(frozen=True)
class Topology:
    """Every process of the platform, the first replica of each service apart."""

    processes: tuple[ProcessSpec, ...]

    def named(self, role: str) -> list[ProcessSpec]:
        return [spec for spec in self.processes if spec.role == role]

    @property
    def first_replicas(self) -> list[str]:
        """One process per service: started (and ready) before the others.

        A service's first start does one-time work (the auth service makes its
        first signing key); one replica doing it alone keeps two from racing.
        """
        seen: set[str] = set()
        first = []
        for spec in self.processes:
            if spec.role != GATEWAY and spec.role not in seen:
                seen.add(spec.role)
                first.append(spec.name)
        return first

    @property
    def gateway(self) -> ProcessSpec:
        return self.named(GATEWAY)[0]


def missing_servers(settings: Settings) -> list[str]:
    """What the distributed shape needs that the settings do not give."""
    missing = []
    if not settings.database_url or settings.database_url.startswith("sqlite"):
        missing.append("PANTHERA_DATABASE_URL (a PostgreSQL URL with {service})")
    if not settings.redis_url:
        missing.append("PANTHERA_REDIS_URL")
    if settings.event_transport is not EventTransportKind.RABBITMQ or not settings.amqp_url:
        missing.append("PANTHERA_EVENT_TRANSPORT=rabbitmq with PANTHERA_AMQP_URL")
    return missing


def _free_ports(count: int, host: str) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan(
    *,
    host: str,
    gateway_port: int,
    first_service_port: int,
    replicas: int,
    services: Sequence[str] = SERVICE_NAMES,
    environ: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> Topology:
    """Every service ``replicas`` times and one gateway, each a ``panthera serve`` process.

    Service ports count up from ``first_service_port`` (0 picks free ones). Every
    process gets the caller's environment plus where all replicas listen, and does
    not migrate on start: ``panthera up`` migrates once before starting any.
    """
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    count = len(services) * replicas
    ports = (
        _free_ports(count, host)
        if first_service_port == 0
        else list(range(first_service_port, first_service_port + count))
    )
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    addresses: dict[str, list[tuple[str, int]]] = {}
    for index, service in enumerate(services):
        for replica in range(replicas):
            name = f"{service}-{replica + 1}"
            addresses.setdefault(service, []).append((name, ports[index * replicas + replica]))
    urls = {
        service: [f"http://{connect_host}:{port}" for _name, port in entries]
        for service, entries in addresses.items()
    }
    env = dict(os.environ if environ is None else environ)
    env.update(
        {
            "PANTHERA_SERVICE_URLS": json.dumps(urls),
            "PANTHERA_MIGRATE_ON_START": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )

    def serve(role: str, name: str, port: int) -> ProcessSpec:
        argv = [python, "-m", "panthera.cli", "serve", role, "--host", host, "--port", str(port)]
        return ProcessSpec(
            name=name, argv=argv, env=env, role=role, url=f"http://{connect_host}:{port}"
        )

    # Replica by replica: all first replicas, then all second ones.
    processes = [
        serve(service, *addresses[service][replica])
        for replica in range(replicas)
        for service in services
    ]
    processes.append(serve(GATEWAY, GATEWAY, gateway_port))
    return Topology(tuple(processes))
