"""The distributed shape end to end: separate processes, PostgreSQL, Redis and RabbitMQ.

Everything goes through the gateway over real HTTP, as a client would; the
checks that need it call a service process directly. What crosses processes:
credentials (users → auth over HTTP), mail (users → notifications through
RabbitMQ), role changes and deletions (users → auth through RabbitMQ, then
revocation through Redis), token verification (every process → auth's JWKS).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from panthera.runtime.registry import SERVICE_NAMES
from tests.e2e.conftest import UpPlatform, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]

PASSWORD = "correct horse battery staple"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
# How long an event may take to cross the broker and be applied.
EVENTUAL_SECONDS = 15.0


@pytest.fixture
async def gateway(distributed: UpPlatform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed.gateway_url, timeout=15.0) as client:
        yield client


def unique_email(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    accept: Callable[[Any], bool],
    *,
    what: str,
    timeout: float = EVENTUAL_SECONDS,
    interval: float = 0.2,
) -> Any:
    """Call ``probe`` until ``accept`` likes its answer; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            shown = f"{result.status_code} {result.text}" if hasattr(result, "text") else result
            pytest.fail(f"{what} did not happen within {timeout}s; last answer: {shown}")
        await asyncio.sleep(interval)


def mail_token(platform: UpPlatform, address: str, path: str) -> str | None:
    """The token of a mailed ``path`` link to ``address``, if one has arrived."""
    for message_file in sorted(platform.mail_dir.glob("*.eml")):
        message = email.message_from_bytes(message_file.read_bytes(), policy=email.policy.default)
        if message["To"] != address:
            continue
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        found = re.search(re.escape(path) + r"\?token=([\w-]+)", body.get_content())
        if found:
            return found.group(1)
    return None


async def register(client: httpx.AsyncClient, address: str) -> uuid.UUID:
    response = await client.post(
        "/api/v1/users/register",
        json={"email": address, "password": PASSWORD, "firstName": "Test", "lastName": "User"},
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def login(client: httpx.AsyncClient, address: str, password: str = PASSWORD) -> Any:
    response = await client.post(
        "/api/v1/users/login", json={"email": address, "password": password}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_account_lifecycle_across_processes(
    distributed: UpPlatform, gateway: httpx.AsyncClient
) -> None:
    # An operator makes an administrator with the CLI, against the same databases
    # and broker. Started now because a process that imports every service takes
    # a while; it runs beside the requests below, as it would in production.
    admin_address = unique_email("admin")
    create_admin = await distributed.cli_in_background(
        "create-admin", "--email", admin_address, "--password", PASSWORD
    )
    try:
        await _lifecycle(distributed, gateway, create_admin, admin_address)
    finally:
        if create_admin.returncode is None:
            create_admin.kill()
            await create_admin.wait()


async def _lifecycle(
    distributed: UpPlatform,
    gateway: httpx.AsyncClient,
    create_admin: asyncio.subprocess.Process,
    admin_address: str,
) -> None:
    # Register; the verification mail comes from the notifications process, which
    # learnt of the account through RabbitMQ.
    address = unique_email("user")
    user_id = await register(gateway, address)

    async def mailed() -> str | None:
        return mail_token(distributed, address, "/account/verify-email")

    token = await eventually(mailed, lambda t: t is not None, what="the verification mail")
    verified = await gateway.post("/api/v1/users/verify-email", json={"token": token})
    assert verified.status_code == 204, verified.text

    # Sign in (users → auth over HTTP), rotate the refresh token, read and edit.
    tokens = await login(gateway, address)
    refreshed = await gateway.post(
        "/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    pair = refreshed.json()
    assert pair["refreshToken"] != tokens["refreshToken"]
    me = await gateway.get("/api/v1/users/me", headers=bearer(pair["accessToken"]))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == str(user_id)
    assert me.json()["emailVerified"] is True
    updated = await gateway.put(
        f"/api/v1/users/profiles/{user_id}",
        json={"firstName": "Jane", "phoneNumber": "+15559876543"},
        headers=bearer(pair["accessToken"]),
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["firstName"] == "Jane"
    assert updated.json()["phoneNumber"] == "+15559876543"

    # The administrator; the auth process learns of the role through RabbitMQ.
    async with asyncio.timeout(90):
        stdout, stderr = await create_admin.communicate()
    output = f"{stdout.decode(errors='replace')}\n{stderr.decode(errors='replace')}"
    assert create_admin.returncode == 0, f"create-admin failed:\n{output}"
    assert "administrator created" in stdout.decode()

    async def admin_listing() -> httpx.Response:
        answer = await login(gateway, admin_address)
        return await gateway.get("/api/v1/users/profiles", headers=bearer(answer["accessToken"]))

    listing = await eventually(
        admin_listing, lambda r: r.status_code == 200, what="the admin's role reaching auth"
    )
    admin_token = listing.request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(admin_token, options={"verify_signature": False})["roles"].count("ADMIN")
    listed = {profile["email"]: profile for profile in listing.json()}
    assert {address, admin_address} <= set(listed)
    assert int(listing.headers["X-Total-Count"]) == len(listed)
    assert listed[admin_address]["emailVerified"] is True

    # Delete the first user: the users process publishes user.deleted, the auth
    # process consumes it, drops the credentials and revokes the sessions in Redis.
    deleted = await gateway.delete(f"/api/v1/users/profiles/{user_id}", headers=bearer(admin_token))
    assert deleted.status_code == 204, deleted.text

    async def own_profile() -> httpx.Response:
        return await gateway.get("/api/v1/users/me", headers=bearer(pair["accessToken"]))

    # 404 would mean the token still works for a profile that is gone.
    await eventually(
        own_profile, lambda r: r.status_code == 401, what="the deleted user's token being revoked"
    )
    relogin = await gateway.post(
        "/api/v1/users/login", json={"email": address, "password": PASSWORD}
    )
    assert relogin.status_code == 401, relogin.text
    again = await gateway.post("/api/v1/auth/refresh", json={"refreshToken": pair["refreshToken"]})
    assert again.status_code == 401, again.text
    gone = await gateway.get(f"/api/v1/users/profiles/{user_id}", headers=bearer(admin_token))
    assert gone.status_code == 404


async def test_every_process_checks_identity_itself(
    distributed: UpPlatform, gateway: httpx.AsyncClient
) -> None:
    address = unique_email("identity")
    await register(gateway, address)
    good = (await login(gateway, address))["accessToken"]
    users_url = distributed.url_of("users")

    # A token that is not one: refused by the gateway, and by the service itself
    # to a caller that goes round the gateway.
    for bad in ("not-a-token", good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")):
        through_gateway = await gateway.get("/api/v1/users/me", headers=bearer(bad))
        assert through_gateway.status_code == 401, through_gateway.text
        async with httpx.AsyncClient(base_url=users_url, timeout=15.0) as direct:
            around = await direct.get("/me", headers=bearer(bad))
        assert around.status_code == 401, around.text

    # A genuine token works at the service directly too: it verifies with the
    # auth process's published keys, not by trusting whoever called.
    async with httpx.AsyncClient(base_url=users_url, timeout=15.0) as direct:
        own = await direct.get("/me", headers=bearer(good))
        assert own.status_code == 200, own.text
        assert own.json()["email"] == address
        # Headers only the gateway may set prove nothing to a service.
        forged = await direct.get("/me", headers={"x-user-id": own.json()["id"]})
        assert forged.status_code == 401, forged.text

    # Internal endpoints: not routed by the gateway, and refused without the
    # platform's shared secret.
    hidden = await gateway.put(f"/api/v1/auth/internal/credentials/{uuid.uuid4()}", json={})
    assert hidden.status_code == 404, hidden.text
    async with httpx.AsyncClient(base_url=distributed.url_of("auth"), timeout=15.0) as direct:
        refused = await direct.put(
            f"/internal/credentials/{uuid.uuid4()}",
            json={"email": "x@example.com", "passwordHash": "x", "roles": ["USER"]},
            headers={"x-internal-token": "guessed"},
        )
    assert refused.status_code == 403, refused.text


async def test_prometheus_scrapes_every_process_and_loads_the_rules(
    distributed: UpPlatform, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Some traffic, so that the services' request counters have something to show.
    assert (await gateway.get("/api/v1/categories")).status_code == 200
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is required: apt-get install -y prometheus")
    targets = distributed.run_dir / "prometheus-targets.json"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "*.yml")],
                "scrape_configs": [
                    {"job_name": "panthera", "file_sd_configs": [{"files": [str(targets)]}]}
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_ports(1)[0]}"
    prometheus = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={address}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    expected = {p["name"] for p in distributed.processes()}
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5.0) as client:

            async def targets_up() -> set[str]:
                try:
                    answer = await client.get("/api/v1/targets")
                except httpx.HTTPError:
                    return set()
                if answer.status_code != 200:
                    return set()
                return {
                    target["labels"]["process"]
                    for target in answer.json()["data"]["activeTargets"]
                    if target["health"] == "up"
                }

            await eventually(
                targets_up, lambda up: up == expected, what="every process scraped", timeout=60
            )
            rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            loaded = [rule for group in rules for rule in group["rules"]]
            assert {group["name"] for group in rules} >= {"panthera.http", "panthera.events"}
            assert all(rule["health"] != "err" for rule in loaded), loaded
            # A recording rule over the services' own metrics yields data.
            query = await client.get(
                "/api/v1/query", params={"query": "sum(panthera_http_requests_total)"}
            )
            assert query.json()["data"]["result"], query.text
    finally:
        prometheus.terminate()
        _out, err = await prometheus.communicate()
        assert prometheus.returncode in (0, -15), err.decode(errors="replace")[-2000:]


async def test_a_killed_replica_is_gone_round_and_restarted(
    distributed: UpPlatform, gateway: httpx.AsyncClient
) -> None:
    # Two replicas of every service, addressed by the gateway and by each other.
    for service in SERVICE_NAMES:
        assert len(distributed.processes(service)) == 2, distributed.topology()
    address = unique_email("replica")
    await register(gateway, address)

    # Kill one users replica and one auth replica outright: signing in goes
    # gateway → users → auth, so both hops must go round a dead peer.
    victims = {name: distributed.process(name) for name in ("users-2", "auth-1")}
    for victim in victims.values():
        os.kill(victim["pid"], signal.SIGKILL)

    # Once they are gone (a request caught mid-flight by the crash may fail, as
    # anywhere), every request finds a live replica while they are being restarted.
    async def states() -> list[dict[str, Any]]:
        return [distributed.process(name) for name in victims]

    await eventually(
        states,
        lambda found: all(p["pid"] != victims[p["name"]]["pid"] for p in found),
        what="the killed replicas exiting",
    )
    for _ in range(12):
        tokens = await login(gateway, address)
        profile = await gateway.get("/api/v1/users/me", headers=bearer(tokens["accessToken"]))
        assert profile.status_code == 200, profile.text

    # The supervisor starts each again, on the same address.
    def back(processes: list[dict[str, Any]]) -> bool:
        return all(
            p["restarts"] >= 1 and p["pid"] not in (None, victims[p["name"]]["pid"])
            for p in processes
        )

    await eventually(states, back, what="the killed replicas being restarted", timeout=30)
    async with httpx.AsyncClient(timeout=5.0) as client:

        async def ready() -> list[int]:
            answers = []
            for victim in victims.values():
                try:
                    answers.append((await client.get(f"{victim['url']}/readyz")).status_code)
                except httpx.HTTPError:
                    answers.append(0)
            return answers

        await eventually(
            ready, lambda codes: codes == [200, 200], what="the restarted replicas", timeout=60
        )
    assert (await login(gateway, address))["accessToken"]


async def test_orders_go_through_with_two_replicas_of_every_service(
    distributed: UpPlatform, gateway: httpx.AsyncClient
) -> None:
    # Two orders replicas share the sagas (leases on the order rows), two payments
    # replicas the webhooks and the reconciler, two catalog replicas the stock.
    admin_address = unique_email("seller")
    made = await distributed.cli_in_background(
        "create-admin", "--email", admin_address, "--password", PASSWORD
    )
    async with asyncio.timeout(120):
        await made.communicate()
    assert made.returncode == 0
    admin = bearer((await login(gateway, admin_address))["accessToken"])
    created = await gateway.post(
        "/api/v1/products",
        json={"name": "Replica Mug", "description": "", "price": "7.50", "stock": 8},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["productId"]
    buyer_address = unique_email("buyer")
    await register(gateway, buyer_address)
    buyer = bearer((await login(gateway, buyer_address))["accessToken"])

    tokens = ["tok_visa"] * 4 + ["tok_chargeDeclined"] * 2 + ["tok_visa"] * 2
    placed = await asyncio.gather(
        *(
            gateway.post(
                "/api/v1/orders",
                json={
                    "items": [{"productId": product_id, "quantity": 1}],
                    "shippingAddress": "1 Main Street",
                    "paymentMethod": token,
                },
                headers={**buyer, "Idempotency-Key": uuid.uuid4().hex},
            )
            for token in tokens
        )
    )
    assert [r.status_code for r in placed] == [201] * len(tokens), [r.text for r in placed]

    async def outcomes() -> list[dict[str, Any]]:
        found = []
        for response in placed:
            order = await gateway.get(f"/api/v1/orders/{response.json()['orderId']}", headers=buyer)
            found.append(order.json())
        return found

    orders = await eventually(
        outcomes,
        lambda found: all(o["status"] in ("CONFIRMED", "CANCELLED") for o in found),
        what="every order leaving PENDING",
        timeout=60,
    )
    by_token = list(zip(tokens, orders, strict=True))
    declined = [o for token, o in by_token if token == "tok_chargeDeclined"]
    assert {(o["status"], o["cancelReason"]) for o in declined} == {("CANCELLED", "card_declined")}
    paid = [o for token, o in by_token if token == "tok_visa"]
    # A unit for every order: each card that pays buys one, none is sold twice, and
    # the declined ones give theirs back.
    assert [o["status"] for o in paid] == ["CONFIRMED"] * 6

    async def stock() -> httpx.Response:
        # Signed in, past the response cache: an anonymous page may show a count
        # that orders have since moved (decision 14).
        return await gateway.get(f"/api/v1/products/{product_id}", headers=admin)

    await eventually(stock, lambda r: r.json()["stock"] == 2, what="the stock settling at 2")

    # The catalog's pictures and search, the mail and the reports, on the same processes.
    picture = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 90, 200)).save(picture, format="JPEG")
    uploaded = await gateway.post(
        f"/api/v1/products/{product_id}/images",
        files={"file": ("mug.jpg", picture.getvalue(), "image/jpeg")},
        headers=admin,
    )
    assert uploaded.status_code == 201, uploaded.text
    served = await gateway.get(uploaded.json()["urls"]["medium"])
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/")
    found = await gateway.get("/api/v1/products", params={"q": "replica mug"})
    assert product_id in [p["productId"] for p in found.json()], found.text

    def confirmation_mailed() -> bool:
        for message_file in distributed.mail_dir.glob("*.eml"):
            message = email.message_from_bytes(
                message_file.read_bytes(), policy=email.policy.default
            )
            if message["To"] == buyer_address and "is confirmed" in str(message["Subject"]):
                return True
        return False

    async def mailed() -> bool:
        return confirmation_mailed()

    await eventually(mailed, bool, what="an order confirmation mail")

    async def sales() -> httpx.Response:
        return await gateway.get("/api/v1/analytics/sales", headers=admin)

    def six_sold(response: httpx.Response) -> bool:
        rows = response.json().get("rows", []) if response.status_code == 200 else []
        return sum(int(row["orders"]) for row in rows if row["currency"] == "USD") >= 6

    await eventually(sales, six_sold, what="the confirmed orders in the sales report")
