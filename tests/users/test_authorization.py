"""Who may do what (OWASP API Top 10: BOLA, BFLA, mass assignment, trusted headers).

Two meta-tests walk every route of every service so that new routes cannot slip
past these checks: every route must declare exactly one permission, and every
route that takes an object id must be classified in ``BOLA_MATRIX``, whose
classes each have a test below.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from panthera.gateway.routes import ROUTES, is_private
from panthera.kernel.security.permissions import permissions_of
from tests.conftest import (
    Account,
    Platform,
    login,
    make_admin,
    register_and_login,
    unique_email,
)

# Newer FastAPI keeps included routers lazily, and this lists their effective routes;
# older releases list them flat in ``app.routes``.
iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)

PERMISSIONS = {"public", "authenticated", "admin", "internal"}
# The kernel's operational routes, on every service app. They carry no
# permission, so they are exempt from the one-permission rule; instead the test
# checks that the gateway never forwards them to the public.
OPERATIONAL_PATHS = {"/healthz", "/readyz", "/metrics"}

# Object-level authorization classes.
OWNER_OR_ADMIN = "owner or admin"  # a user's own object: tested user A against user B
ADMIN = "admin only"  # no user reaches it, whichever object: tested with a USER token
INTERNAL = "internal only"  # other services only: tested without the internal token
PUBLIC = "public"  # the same for everybody (catalog data): nothing to protect per object

# Every route with an object id in its path, by (service, method, path), and
# how its objects are protected. A new route with an id fails
# test_every_object_route_is_in_the_bola_matrix until it is added here, and
# adding an OWNER_OR_ADMIN route fails test_bola_matrix_owner_routes until
# OWNER_REQUESTS says how to call it.
BOLA_MATRIX: dict[tuple[str, str, str], str] = {
    ("users", "GET", "/profiles/{userId}"): OWNER_OR_ADMIN,
    ("users", "PUT", "/profiles/{userId}"): OWNER_OR_ADMIN,
    ("users", "GET", "/{userId}"): OWNER_OR_ADMIN,
    ("users", "PUT", "/{userId}"): OWNER_OR_ADMIN,
    ("users", "DELETE", "/profiles/{userId}"): ADMIN,
    ("users", "PUT", "/profiles/{userId}/roles"): ADMIN,
    ("auth", "PUT", "/internal/credentials/{user_id}"): INTERNAL,
    ("auth", "PUT", "/internal/credentials/{user_id}/password"): INTERNAL,
    ("auth", "DELETE", "/internal/credentials/{user_id}"): INTERNAL,
    ("catalog", "GET", "/products/{productId}"): PUBLIC,
    ("catalog", "PATCH", "/products/{productId}"): ADMIN,
    ("catalog", "DELETE", "/products/{productId}"): ADMIN,
    ("catalog", "PATCH", "/products/{productId}/variants/{variantId}"): ADMIN,
    ("catalog", "POST", "/products/{productId}/images"): ADMIN,
    ("catalog", "DELETE", "/products/{productId}/images/{imageId}"): ADMIN,
    ("catalog", "POST", "/inventory/variants/{variantId}/adjustments"): ADMIN,
    ("catalog", "GET", "/inventory/variants/{variantId}/movements"): ADMIN,
    ("payments", "GET", "/payments/{paymentId}"): OWNER_OR_ADMIN,
    ("payments", "POST", "/payments/{paymentId}/refunds"): ADMIN,
    ("orders", "GET", "/orders/{orderId}"): OWNER_OR_ADMIN,
    ("orders", "GET", "/orders/user/{userId}"): OWNER_OR_ADMIN,
    ("orders", "POST", "/orders/{orderId}/cancel"): OWNER_OR_ADMIN,
    ("orders", "POST", "/orders/{orderId}/ship"): ADMIN,
    ("orders", "POST", "/orders/{orderId}/deliver"): ADMIN,
    ("orders", "POST", "/orders/{orderId}/refund"): ADMIN,
}
EXPECTED_PERMISSION = {
    OWNER_OR_ADMIN: "authenticated",
    ADMIN: "admin",
    INTERNAL: "internal",
    PUBLIC: "public",
}


async def _own_profile(platform: Platform, owner: Account) -> uuid.UUID:
    return owner.id


async def _own_payment(platform: Platform, owner: Account) -> uuid.UUID:
    response = await platform.client.post(
        "/api/v1/payments",
        json={
            "orderId": f"order-{uuid.uuid4().hex[:8]}",
            "amount": "12.50",
            "currency": "EUR",
            "paymentMethod": "tok_visa",
        },
        headers={**owner.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["paymentId"])


async def _own_order(platform: Platform, owner: Account) -> uuid.UUID:
    seller = await make_admin(platform)
    seller_headers = seller.headers
    made = await platform.client.post(
        "/api/v1/products",
        json={"name": "Owned Thing", "description": "", "price": "3.00", "stock": 5},
        headers=seller_headers,
    )
    assert made.status_code == 201, made.text
    response = await platform.client.post(
        "/api/v1/orders",
        json={
            "items": [{"productId": made.json()["productId"], "quantity": 1}],
            "shippingAddress": "1 Main Street",
            "paymentMethod": "tok_visa",
        },
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["orderId"])


# For each owner route: how the owner comes to have an object there (its id), and
# the body to send (None for reads).
OwnedObject = Callable[[Platform, Account], Awaitable[uuid.UUID]]
OWNER_REQUESTS: dict[tuple[str, str, str], tuple[OwnedObject, dict[str, Any] | None]] = {
    ("users", "GET", "/profiles/{userId}"): (_own_profile, None),
    ("users", "PUT", "/profiles/{userId}"): (_own_profile, {"firstName": "Mallory"}),
    ("users", "GET", "/{userId}"): (_own_profile, None),
    ("users", "PUT", "/{userId}"): (_own_profile, {"lastName": "Mallory"}),
    ("payments", "GET", "/payments/{paymentId}"): (_own_payment, None),
    ("orders", "GET", "/orders/{orderId}"): (_own_order, None),
    ("orders", "GET", "/orders/user/{userId}"): (_own_profile, None),
    ("orders", "POST", "/orders/{orderId}/cancel"): (_own_order, {"message": "changed my mind"}),
}

_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


def _routes(app: FastAPI) -> Iterator[Any]:
    """Every route of an app, with its effective path, methods and dependant."""
    if iter_route_contexts is None:
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def _api_routes(platform: Platform) -> Iterator[tuple[str, str, str, Any]]:
    """(service, method, path, route) for every API route of every service app."""
    for service, app in platform.app.state.platform.apps.items():
        for route in _routes(app):
            original = getattr(route, "original_route", route)
            if not isinstance(original, APIRoute):
                continue
            for method in sorted(route.methods):
                yield service, method, route.path, route


def _object_parameters(path: str) -> list[str]:
    return [
        name for name in _PARAMETER.findall(path) if name.endswith("Id") or name.endswith("_id")
    ]


def _concrete(path: str, object_id: uuid.UUID | None = None) -> str:
    """The path with every parameter filled in (ids with ``object_id`` or a random UUID)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("Id") or name.endswith("_id"):
            return str(object_id or uuid.uuid4())
        return "some-" + name.lower()

    return _PARAMETER.sub(fill, path)


def _gateway_path(service: str, path: str) -> str:
    """The public path, at the gateway, of a path on a service."""
    for route in ROUTES:
        if route.service != service:
            continue
        prefix = route.upstream_prefix
        if not prefix or path == prefix or path.startswith(prefix + "/"):
            return route.prefix + path[len(prefix) :]
    raise AssertionError(f"the gateway does not publish {service} {path}")


@pytest.fixture
async def direct(platform: Platform) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client on each service app itself, bypassing the gateway."""
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
        for name, app in platform.app.state.platform.apps.items()
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _profile(platform: Platform, account: Account, admin: Account) -> dict[str, Any]:
    response = await platform.client.get(
        f"/api/v1/users/profiles/{account.id}", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- Meta-tests -----------------------------------------------------------------------------


async def test_every_route_declares_exactly_one_permission(platform: Platform) -> None:
    problems = []
    for service, method, path, route in _api_routes(platform):
        declared = permissions_of(route.dependant)
        if path in OPERATIONAL_PATHS:
            assert not declared, (service, path, declared)
            continue
        if len(declared) != 1 or not declared <= PERMISSIONS:
            problems.append(f"{service} {method} {path}: {sorted(declared) or 'none'}")
    assert not problems, "routes without exactly one permission:\n" + "\n".join(problems)


async def test_operational_routes_are_not_forwarded_by_the_gateway(platform: Platform) -> None:
    reachable = 0
    for route in ROUTES:
        for path in OPERATIONAL_PATHS:
            if route.upstream_prefix:
                continue  # this prefix stands for a subtree: it cannot name the root paths
            assert is_private(path)
            response = await platform.client.get(route.prefix + path)
            assert response.status_code == 404, (route.prefix + path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            reachable += 1
    assert reachable >= 9


async def test_every_object_route_is_in_the_bola_matrix(platform: Platform) -> None:
    found = {}
    for service, method, path, route in _api_routes(platform):
        if _object_parameters(path):
            found[(service, method, path)] = permissions_of(route.dependant)
    missing = sorted(set(found) - set(BOLA_MATRIX))
    assert not missing, f"routes with object ids not in BOLA_MATRIX: {missing}"
    stale = sorted(set(BOLA_MATRIX) - set(found))
    assert not stale, f"BOLA_MATRIX lists routes that no longer exist: {stale}"
    wrong = {
        key: (BOLA_MATRIX[key], sorted(declared))
        for key, declared in found.items()
        if declared != {EXPECTED_PERMISSION[BOLA_MATRIX[key]]}
    }
    assert not wrong, f"routes whose permission contradicts BOLA_MATRIX: {wrong}"
    owner_routes = {key for key, kind in BOLA_MATRIX.items() if kind == OWNER_OR_ADMIN}
    assert owner_routes == set(OWNER_REQUESTS), "every owner route needs an OWNER_REQUESTS entry"


# --- BOLA: a user's objects ----------------------------------------------------------------


async def test_bola_matrix_owner_routes(platform: Platform) -> None:
    admin = await make_admin(platform)
    alice = await register_and_login(platform.client)
    bob = await register_and_login(platform.client)
    bob_before = await _profile(platform, bob, admin)

    for (service, method, path), (make_object, body) in OWNER_REQUESTS.items():
        object_id = await make_object(platform, bob)
        public_path = _gateway_path(service, _concrete(path, object_id))
        as_alice = await platform.client.request(
            method, public_path, json=body, headers=alice.headers
        )
        # Someone else's object does not exist, for Alice (reads); writes may say 403.
        expected = {404} if method == "GET" else {403, 404}
        assert as_alice.status_code in expected, (method, path, as_alice.text)
        assert as_alice.headers["content-type"].startswith("application/problem+json")
        assert bob.email not in as_alice.text
        # Control: the owner and an admin get through with the same request.
        for caller in (bob, admin):
            allowed = await platform.client.request(
                method, public_path, json=body, headers=caller.headers
            )
            assert allowed.status_code == 200, (method, path, allowed.text)
        if body is not None and service == "users":
            # Put the owner's edit back, so later checks compare with the same profile.
            undo = {key: bob_before[key] for key in body}
            restored = await platform.client.put(public_path, json=undo, headers=bob.headers)
            assert restored.status_code == 200

    # A random id answers like someone else's: existence does not leak.
    nobody = await platform.client.get(f"/api/v1/users/{uuid.uuid4()}", headers=alice.headers)
    assert nobody.status_code == 404
    # Bob's profile is as it was.
    after = await _profile(platform, bob, admin)
    assert {k: v for k, v in after.items() if k != "updatedAt"} == {
        k: v for k, v in bob_before.items() if k != "updatedAt"
    }


async def test_user_cannot_delete_another_user(platform: Platform) -> None:
    admin = await make_admin(platform)
    alice = await register_and_login(platform.client)
    bob = await register_and_login(platform.client)
    for target in (bob, admin, alice):
        refused = await platform.client.delete(
            f"/api/v1/users/profiles/{target.id}", headers=alice.headers
        )
        assert refused.status_code == 403, refused.text
    await platform.settle()
    await _profile(platform, bob, admin)
    await login(platform.client, bob.email, bob.password)


# --- BFLA: admin functions ------------------------------------------------------------------


async def test_admin_routes_refuse_a_user_token(platform: Platform) -> None:
    await make_admin(platform)
    user = await register_and_login(platform.client)
    other = await register_and_login(platform.client)
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/api/v1/users/profiles", None),
        ("DELETE", f"/api/v1/users/profiles/{other.id}", None),
        ("PUT", f"/api/v1/users/profiles/{other.id}/roles", {"roles": ["USER", "ADMIN"]}),
        ("PUT", f"/api/v1/users/profiles/{user.id}/roles", {"roles": ["USER", "ADMIN"]}),
        ("GET", "/api/v1/notifications/deliveries", None),
    ]
    for method, path, body in requests:
        response = await platform.client.request(method, path, json=body, headers=user.headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
        anonymous = await platform.client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
    # Nothing happened: the user is still a plain user, the other one still exists.
    await platform.settle()
    me = await platform.client.get("/api/v1/users/me", headers=user.headers)
    assert me.json()["roles"] == ["USER"]
    await login(platform.client, other.email, other.password)


async def test_every_admin_route_of_every_service_refuses_users(
    platform: Platform, direct: dict[str, httpx.AsyncClient]
) -> None:
    """Derived from the routes themselves, so a new admin route is covered at once."""
    user = await register_and_login(platform.client)
    checked = 0
    for service, method, path, route in _api_routes(platform):
        declared = permissions_of(route.dependant)
        if declared == {"admin"}:
            expected = 403
            headers = user.headers
        elif declared == {"authenticated"}:
            expected, headers = 401, {}
        elif declared == {"internal"}:
            expected, headers = 403, {"X-Internal-Token": "guessed-token"}
        else:
            continue
        response = await direct[service].request(method, _concrete(path), json={}, headers=headers)
        assert response.status_code == expected, (service, method, path, response.text)
        if declared == {"admin"}:
            anonymous = await direct[service].request(method, _concrete(path), json={})
            assert anonymous.status_code == 401, (service, method, path, anonymous.text)
        checked += 1
    assert checked >= 20


# --- Mass assignment ------------------------------------------------------------------------


async def test_profile_update_refuses_fields_it_does_not_own(platform: Platform) -> None:
    admin = await make_admin(platform)
    user = await register_and_login(platform.client)
    before = await _profile(platform, user, admin)
    for extra in (
        {"roles": ["ADMIN"]},
        {"roles": ["USER", "ADMIN"]},
        {"email": "takeover@example.com"},
        {"id": str(admin.id)},
        {"emailVerified": True},
        {"createdAt": "2000-01-01T00:00:00Z"},
        {"password": "a new password!"},
    ):
        for path in (f"/api/v1/users/profiles/{user.id}", f"/api/v1/users/{user.id}"):
            response = await platform.client.put(
                path, json={"firstName": "Changed", **extra}, headers=user.headers
            )
            assert response.status_code == 400, (extra, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "invalid_input"
    await platform.settle()
    assert await _profile(platform, user, admin) == before
    # The token still says USER: nothing reached the auth service either.
    fresh = await login(platform.client, user.email, user.password)
    listing = await platform.client.get(
        "/api/v1/users/profiles", headers=_bearer(fresh["accessToken"])
    )
    assert listing.status_code == 403


async def test_registration_refuses_fields_it_does_not_own(platform: Platform) -> None:
    for extra in (
        {"roles": ["ADMIN"]},
        {"emailVerified": True},
        {"id": str(uuid.uuid4())},
    ):
        email = unique_email()
        response = await platform.client.post(
            "/api/v1/users/register",
            json={
                "email": email,
                "password": "correct horse battery staple",
                "firstName": "Eve",
                "lastName": "Doe",
                **extra,
            },
        )
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["code"] == "invalid_input"
        # No account was made, with or without the extra field.
        refused = await platform.client.post(
            "/api/v1/users/login",
            json={"email": email, "password": "correct horse battery staple"},
        )
        assert refused.status_code == 401


# --- Identity headers -----------------------------------------------------------------------


async def test_client_identity_headers_are_not_trusted(
    platform: Platform, direct: dict[str, httpx.AsyncClient]
) -> None:
    admin = await make_admin(platform)
    user = await register_and_login(platform.client)
    spoofed = {
        "X-User-Id": str(admin.id),
        "X-User-Roles": "ADMIN",
        "X-Client-IP": "127.0.0.1",
        "X-Forwarded-For": "127.0.0.1",
        "X-Real-IP": "127.0.0.1",
        "Forwarded": "for=127.0.0.1",
    }
    # With the user's token: still the user.
    me = await platform.client.get("/api/v1/users/me", headers={**user.headers, **spoofed})
    assert me.status_code == 200
    assert me.json()["id"] == str(user.id)
    listing = await platform.client.get(
        "/api/v1/users/profiles", headers={**user.headers, **spoofed}
    )
    assert listing.status_code == 403
    # Without a token: nobody, at the gateway and at the service itself.
    assert (await platform.client.get("/api/v1/users/me", headers=spoofed)).status_code == 401
    assert (await direct["users"].get("/me", headers=spoofed)).status_code == 401
    assert (await direct["users"].get("/profiles", headers=spoofed)).status_code == 401


async def test_internal_routes_cannot_be_reached_through_the_gateway(
    platform: Platform, direct: dict[str, httpx.AsyncClient]
) -> None:
    victim = await register_and_login(platform.client)
    # The real internal token: knowing it must not help from outside either.
    internal_token = platform.settings.internal_token.get_secret_value()
    attacker_hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43
    headers = {"X-Internal-Token": internal_token, "X-Forwarded-For": "127.0.0.1"}
    body = {"passwordHash": attacker_hash}
    target = f"internal/credentials/{victim.id}/password"
    for path in (
        f"/api/v1/auth/{target}",
        f"/api/v1/auth//{target}",
        f"/api/v1/auth/%2e%2e/auth/{target}",
        f"/api/v1/auth/%2e%2e/{target}",
        f"/api/v1/auth/./{target}",
        f"/api/v1/auth/INTERNAL/credentials/{victim.id}/password",
        f"/api/v1/auth/Internal/credentials/{victim.id}/password",
        f"/api/v1/auth/%69nternal/credentials/{victim.id}/password",
        f"/api/v1/auth/internal%2Fcredentials/{victim.id}/password",
        f"/api/v1/users/..%2F..%2Fauth/{target}",
        f"/api/v1/users/%2e%2e/auth/{target}",
        f"/.well-known/jwks.json/../../api/v1/auth/{target}",
    ):
        response = await platform.client.put(path, json=body, headers=headers)
        assert response.status_code in {400, 404}, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for method, path in (
        ("PUT", f"/api/v1/auth/internal/credentials/{victim.id}"),
        ("DELETE", f"/api/v1/auth/internal/credentials/{victim.id}"),
    ):
        response = await platform.client.request(method, path, json={}, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
    # The victim's password and credentials are untouched.
    await login(platform.client, victim.email, victim.password)

    # At the auth service itself, the route answers 403 without the right token.
    for supplied in ({}, {"X-Internal-Token": "wrong"}, {"X-Internal-Token": internal_token[:-1]}):
        response = await direct["auth"].put(
            f"/{target}", json=body, headers={**supplied, "X-Client-IP": "127.0.0.1"}
        )
        assert response.status_code == 403, (supplied, response.text)
    await login(platform.client, victim.email, victim.password)


# --- Roles ----------------------------------------------------------------------------------


async def test_roles_are_managed_by_admins_only(platform: Platform) -> None:
    admin = await make_admin(platform)
    user = await register_and_login(platform.client)
    roles_path = f"/api/v1/users/profiles/{user.id}/roles"

    # A user cannot promote themselves.
    self_promotion = await platform.client.put(
        roles_path, json={"roles": ["USER", "ADMIN"]}, headers=user.headers
    )
    assert self_promotion.status_code == 403
    await platform.settle()
    assert (await _profile(platform, user, admin))["roles"] == ["USER"]

    # The admin can give ADMIN...
    given = await platform.client.put(
        roles_path, json={"roles": ["USER", "ADMIN"]}, headers=admin.headers
    )
    assert given.status_code == 200, given.text
    assert sorted(given.json()["roles"]) == ["ADMIN", "USER"]
    await platform.settle()
    promoted = await login(platform.client, user.email, user.password)
    listing = await platform.client.get(
        "/api/v1/users/profiles", headers=_bearer(promoted["accessToken"])
    )
    assert listing.status_code == 200

    # ...and take it away again; the promoted tokens stop working.
    taken = await platform.client.put(roles_path, json={"roles": ["USER"]}, headers=admin.headers)
    assert taken.status_code == 200, taken.text
    assert taken.json()["roles"] == ["USER"]
    await platform.settle()
    stale = await platform.client.get(
        "/api/v1/users/profiles", headers=_bearer(promoted["accessToken"])
    )
    assert stale.status_code == 401
    demoted = await login(platform.client, user.email, user.password)
    refused = await platform.client.get(
        "/api/v1/users/profiles", headers=_bearer(demoted["accessToken"])
    )
    assert refused.status_code == 403


async def test_last_admin_keeps_the_admin_role(platform: Platform) -> None:
    admin = await make_admin(platform)
    own_roles = f"/api/v1/users/profiles/{admin.id}/roles"
    demoted = await platform.client.put(own_roles, json={"roles": ["USER"]}, headers=admin.headers)
    assert demoted.status_code == 409, demoted.text
    assert demoted.json()["code"] == "last_administrator"
    deleted = await platform.client.delete(
        f"/api/v1/users/profiles/{admin.id}", headers=admin.headers
    )
    assert deleted.status_code == 409
    await platform.settle()
    listing = await platform.client.get("/api/v1/users/profiles", headers=admin.headers)
    assert listing.status_code == 200

    # With a second admin, the first may step down.
    second = await make_admin(platform)
    stepped_down = await platform.client.put(
        own_roles, json={"roles": ["USER"]}, headers=second.headers
    )
    assert stepped_down.status_code == 200, stepped_down.text
    # Now the second is the last one.
    last = await platform.client.put(
        f"/api/v1/users/profiles/{second.id}/roles",
        json={"roles": ["USER"]},
        headers=second.headers,
    )
    assert last.status_code == 409
