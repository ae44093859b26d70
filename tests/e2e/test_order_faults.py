"""Orders through the distributed shape while processes die and the broker connection drops.

100 sagas run through the gateway; meanwhile the orders process and then the
payments process are killed with SIGKILL and started again, and every
connection to RabbitMQ is cut (the processes reach the broker through a TCP
proxy this test controls). Afterwards every order is CONFIRMED or CANCELLED,
every saga has finished, no outbox holds an undelivered event, the money taken
equals the money of the CONFIRMED orders, and the stock moved exactly by what
was sold.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from panthera.runtime.registry import SERVICE_NAMES
from tests.e2e.conftest import (
    STARTUP_SECONDS,
    DistributedPlatform,
    _check_servers,
    _environment,
    free_ports,
)
from tests.integration.conftest import (
    AMQP_URL,
    DATABASE_URL,
    AmqpNamespace,
    PostgresServer,
    ServiceDatabases,
    unique_prefix,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(420)]

PASSWORD = "correct horse battery staple"
ORDERS = 100
BUYERS = 10
# Tokens the buyers pay with: most go through, some are declined.
TOKENS = ["tok_visa"] * 4 + ["tok_chargeDeclined"]


@dataclass
class BrokerProxy:
    """A TCP proxy in front of RabbitMQ whose connections the test can cut at will."""

    target: tuple[str, int]
    port: int = 0
    _server: socket.socket | None = None
    _links: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _refusing_until: float = 0.0
    _stopped: bool = False

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, original: str) -> str:
        parts = urlsplit(original)
        netloc = parts.netloc.rsplit("@", 1)
        auth = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def cut(self, refuse_seconds: float = 3.0) -> int:
        """Drop every open connection and refuse new ones for a while; how many were cut."""
        self._refusing_until = time.monotonic() + refuse_seconds
        with self._lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            link.close()
        return len(links) // 2

    def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.close()
        self.cut(0)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if time.monotonic() < self._refusing_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    pair[source].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._links.discard(a)
                self._links.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


@dataclass
class Topology:
    platform: DistributedPlatform
    databases: ServiceDatabases
    proxy: BrokerProxy
    ports: dict[str, int]

    def restart(self, name: str) -> None:
        """SIGKILL one process and start it again on its port, as a supervisor would.

        A process that starts while the broker refuses connections exits at once;
        like ``panthera up``'s supervisor, this starts it again until it is ready.
        """
        process = self.platform.processes[name]
        process.popen.kill()
        process.popen.wait(timeout=10)
        deadline = time.monotonic() + STARTUP_SECONDS
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.platform.start(name, self.ports[name])
                started = self.platform.processes[name].popen
                while started.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == 200:
                            return
                    assert time.monotonic() < deadline, f"{name} not ready in time"
                    time.sleep(0.2)
                assert time.monotonic() < deadline, f"{name} kept exiting\n{self.platform.logs()}"
                time.sleep(1.0)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    _check_servers()
    root = tmp_path_factory.mktemp("order-faults")
    data_dir, log_dir = root / "data", root / "logs"
    data_dir.mkdir()
    log_dir.mkdir()
    prefix = unique_prefix()
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), prefix)
    namespace = AmqpNamespace(AMQP_URL, prefix)
    broker = urlsplit(AMQP_URL)
    proxy = BrokerProxy((broker.hostname or "127.0.0.1", broker.port or 5672))
    proxy.start()
    names = [*SERVICE_NAMES, "gateway"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = _environment(databases=databases, namespace=prefix, data_dir=data_dir, urls=urls)
    env.update(
        {
            "PANTHERA_AMQP_URL": proxy.url(AMQP_URL),
            # Sign-ups are not what is tested: a cheap password hash.
            "PANTHERA_PASSWORD_MEMORY_KIB": "1024",
            "PANTHERA_PASSWORD_TIME_COST": "1",
            "PANTHERA_RATE_LIMIT_PER_USER_PER_MINUTE": "100000",
            "PANTHERA_RATE_LIMIT_PER_USER_BURST": "10000",
            # A killed process's leases and unanswered payments are taken over soon.
            "PANTHERA_SAGA_LEASE_SECONDS": "3",
            "PANTHERA_SAGA_PAYMENT_TIMEOUT_SECONDS": "20",
            "PANTHERA_PAYMENT_RECONCILE_AFTER_SECONDS": "3",
            "PANTHERA_PAYMENT_RECONCILE_POLL_SECONDS": "1",
        }
    )
    platform = DistributedPlatform(env=env, data_dir=data_dir, log_dir=log_dir)
    try:
        asyncio.run(databases.create(SERVICE_NAMES))
        deadline = time.monotonic() + STARTUP_SECONDS
        for name in names:
            platform.start(name, ports[name])
        platform.wait_ready(list(SERVICE_NAMES), deadline)
        platform.wait_ready(["gateway"], deadline)
        yield Topology(platform, databases, proxy, ports)
    finally:
        platform.stop()
        proxy.stop()
        asyncio.run(databases.drop())
        asyncio.run(namespace.delete())


@pytest.fixture
async def gateway(topology: Topology) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=topology.platform.gateway_url, timeout=30.0) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _buyer(gateway: httpx.AsyncClient) -> dict[str, str]:
    address = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    registered = await gateway.post(
        "/api/v1/users/register",
        json={"email": address, "password": PASSWORD, "firstName": "B", "lastName": "Uyer"},
    )
    assert registered.status_code == 201, registered.text
    login = await gateway.post("/api/v1/users/login", json={"email": address, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return bearer(login.json()["accessToken"])


async def _admin(topology: Topology, gateway: httpx.AsyncClient) -> dict[str, str]:
    address = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    made = await topology.platform.cli_in_background(
        "create-admin", "--email", address, "--password", PASSWORD
    )
    async with asyncio.timeout(120):
        out, err = await made.communicate()
    assert made.returncode == 0, (out + err).decode(errors="replace")[-2000:]
    login = await gateway.post("/api/v1/users/login", json={"email": address, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return bearer(login.json()["accessToken"])


async def _place_until_answered(
    gateway: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> str:
    """Place one order, retrying with the same Idempotency-Key through outages."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    while True:
        try:
            response = await gateway.post(
                "/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": key}
            )
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 201:
            order_id: str = response.json()["orderId"]
            return order_id
        if response is not None and response.status_code < 500 and response.status_code != 409:
            pytest.fail(f"placing an order answered {response.status_code}: {response.text}")
        last = f"{response.status_code} {response.text}" if response is not None else "no answer"
        assert time.monotonic() < deadline, f"the order could not be placed in 120 s: {last}"
        await asyncio.sleep(0.3)


async def _scalar_rows(url: str, query: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())
    finally:
        await engine.dispose()


async def test_sagas_survive_killed_processes_and_a_dropped_broker(
    topology: Topology, gateway: httpx.AsyncClient
) -> None:
    admin = await _admin(topology, gateway)
    products: dict[str, tuple[int, int]] = {}  # id -> (price in cents, stock)
    for price, stock in ((1000, 30), (2550, 12), (499, 8)):
        made = await gateway.post(
            "/api/v1/products",
            json={
                "name": f"Thing {uuid.uuid4().hex[:6]}",
                "description": "for the fault test",
                "price": f"{price // 100}.{price % 100:02d}",
                "stock": stock,
            },
            headers=admin,
        )
        assert made.status_code == 201, made.text
        products[made.json()["productId"]] = (price, stock)
    buyers = [await _buyer(gateway) for _ in range(BUYERS)]
    rng = random.Random(7)
    bodies = [
        {
            "items": [
                {"productId": product_id, "quantity": rng.randint(1, 2)}
                for product_id in rng.sample(sorted(products), rng.randint(1, 2))
            ],
            "shippingAddress": "1 Main Street, Springfield",
            "paymentMethod": rng.choice(TOKENS),
        }
        for _ in range(ORDERS)
    ]

    gate = asyncio.Semaphore(10)

    async def one(index: int) -> str:
        async with gate:
            return await _place_until_answered(gateway, buyers[index % BUYERS], bodies[index])

    async def faults() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(topology.restart, "orders")
        await asyncio.sleep(1.0)
        assert topology.proxy.cut() > 0
        # Killed while the broker refuses connections: it comes back only once the
        # broker does, and still finishes every saga it had in hand.
        await asyncio.to_thread(topology.restart, "payments")

    placing = asyncio.gather(*(one(i) for i in range(ORDERS)))
    order_ids, _ = await asyncio.gather(placing, faults())
    assert len(set(order_ids)) == ORDERS

    orders_url = topology.databases.url_for("orders")
    deadline = time.monotonic() + 180
    while True:
        unfinished = await _scalar_rows(
            orders_url, "SELECT count(*) FROM orders WHERE saga_step <> 'done'"
        )
        if unfinished[0][0] == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{unfinished[0][0]} sagas unfinished\n{topology.platform.logs()}")
        await asyncio.sleep(1.0)

    rows = await _scalar_rows(orders_url, "SELECT id, status, total_amount FROM orders")
    assert len(rows) == ORDERS
    statuses = {str(row[0]): row[1] for row in rows}
    assert set(statuses.values()) <= {"CONFIRMED", "CANCELLED"}, statuses
    confirmed = {order_id for order_id, status in statuses.items() if status == "CONFIRMED"}
    assert confirmed, "no order went through"
    confirmed_money = sum(row[2] for row in rows if row[1] == "CONFIRMED")

    # Money: what was taken and kept is exactly the CONFIRMED orders' totals, one
    # payment each; a cancelled order kept nothing.
    payments = await _scalar_rows(
        topology.databases.url_for("payments"),
        "SELECT order_reference, status, amount, amount_refunded FROM payments",
    )
    kept: dict[str, int] = {}
    for reference, status, amount, refunded in payments:
        if status in ("succeeded", "partially_refunded", "refunded"):
            assert reference not in kept, f"two payments went through for {reference}"
            kept[reference] = amount - refunded
    assert {ref for ref, money in kept.items() if money > 0} == confirmed
    assert sum(kept.values()) == confirmed_money

    # Stock: each product went down by exactly what the CONFIRMED orders bought.
    sold: dict[str, int] = {}
    for order_id in confirmed:
        lines = await _scalar_rows(
            orders_url,
            "SELECT product_id, quantity FROM order_items WHERE order_id = :order_id",
            order_id=uuid.UUID(order_id),
        )
        for product_id, quantity in lines:
            sold[str(product_id)] = sold.get(str(product_id), 0) + quantity
    catalog_url = topology.databases.url_for("catalog")
    for product_id, (_, stock) in products.items():
        ((on_hand, reserved),) = await _scalar_rows(
            catalog_url,
            "SELECT on_hand, reserved FROM variants WHERE product_id = :product_id",
            product_id=uuid.UUID(product_id),
        )
        assert (on_hand, reserved) == (stock - sold.get(product_id, 0), 0), product_id
        assert on_hand >= 0

    # No event was lost on the way: every outbox row of every service is delivered (and
    # so deleted; none parked as dead). A row whose publish failed while the broker was
    # cut is sent again after its backoff, which may end after the last saga did: each
    # service gets a minute to catch up.
    deadline = time.monotonic() + 60
    for service in SERVICE_NAMES:
        while True:
            pending = await _scalar_rows(
                topology.databases.url_for(service),
                "SELECT count(*) FROM outbox",
            )
            if pending[0][0] == 0:
                break
            assert time.monotonic() < deadline, f"{service} has undelivered events"
            await asyncio.sleep(0.5)
