"""Schemathesis against the users and auth service apps: as an anonymous caller, a USER, an ADMIN.

Every answer must be: no 5xx, a documented status code, a documented content type, and a body
that matches the schema documented for that status.

How it runs
-----------
The schemas are the services' own generated OpenAPI documents, loaded at import (nothing starts).
Schemathesis reaches the apps in-process through its ASGI transport, which runs every app on one
event loop of its own (a shared portal thread). Each service app is wrapped so that its ASGI
lifespan startup builds and starts the embedded platform on that loop, once, and enrols the
callers there: they register and sign in through the gateway, and the administrator is made the
way ``tests.conftest.make_admin`` makes one. Requests, databases and the outbox relays all live on
that one loop.

Schemathesis' pytest plugin ends every ASGI lifespan after each test, so a lifespan shutdown
does not stop the platform; the module's ``harness`` fixture stops it at the end.

Callers only aim at their own id (reading or editing a profile) or at throwaway victims' ids
(deletion, role changes), never at each other's, so no test can sign another caller out; a
caller's ``/logout`` uses a fresh sign-in of its own. The internal routes are not in the schemas,
so they are never called. Generation is derandomised (reproducible) and modest.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from panthera.runtime.apps import embedded_app
from panthera.runtime.documents import openapi_documents
from tests.conftest import (
    PASSWORD,
    Account,
    Platform,
    make_admin,
    make_settings,
    register_and_login,
)

pytestmark = pytest.mark.filterwarnings(
    # Raised from inside Schemathesis' own negative-data strategies, not from this code.
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 25
SEED = 20240601
# Operations whose {userId} is, for half of the valid ids drawn, the caller's own id ...
OWN_ID_OPERATIONS = {
    ("GET", "/profiles/{userId}"),
    ("PUT", "/profiles/{userId}"),
    ("GET", "/{userId}"),
    ("PUT", "/{userId}"),
}
# ... or a throwaway victim's (an admin deletes it or changes its roles: 204/200, then 404).
VICTIM_OPERATIONS = {("DELETE", "/profiles/{userId}"), ("PUT", "/profiles/{userId}/roles")}
# Operations that end the session they are called with: they get a fresh sign-in per call.
SESSION_ENDING = {("POST", "/logout")}
OAUTH_CLIENT = "panthera-web"
OAUTH_REDIRECT = "http://127.0.0.1:8000/auth/callback"

Scope = dict[str, Any]


@dataclass
class Caller:
    name: str
    account: Account | None = None

    @property
    def headers(self) -> dict[str, str]:
        return self.account.headers if self.account else {}


class EmbeddedPlatform:
    """The embedded platform under test, built and started on Schemathesis' event loop."""

    def __init__(self) -> None:
        self.data_dir: Path | None = None
        self.callers: dict[str, Caller] = {}
        self.victims: list[uuid.UUID] = []
        self.closing = False
        self.gateway: Any = None
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        if self._stack is not None:
            return
        if self.data_dir is None:
            raise RuntimeError("the harness fixture gives the platform its directory")
        settings = make_settings(
            self.data_dir,
            # Cheap hashes: the fuzzer registers and signs in many times.
            password_memory_kib=1024,
            password_time_cost=1,
            login_attempts_per_account=100_000,
            login_attempts_per_address=100_000,
        )
        gateway = embedded_app(settings)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(gateway.router.lifespan_context(gateway))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway, client=("203.0.113.10", 50000)),
                base_url="http://testserver",
                timeout=30,
            )
            stack.push_async_callback(client.aclose)
            platform = Platform(app=gateway, client=client, settings=settings)
            self.callers = {
                "anonymous": Caller("anonymous"),
                "user": Caller("user", await register_and_login(client)),
                "admin": Caller("admin", await make_admin(platform)),
            }
            self.victims = [(await register_and_login(client)).id for _ in range(4)]
            self.gateway = gateway
            self._stack = stack.pop_all()

    @property
    def running(self) -> bool:
        return self._stack is not None

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def service(self, name: str) -> Any:
        return self.gateway.state.platform.apps[name]


@dataclass(eq=False)
class ServiceApp:
    """A service's ASGI app whose lifespan starts (and finally stops) the embedded platform."""

    harness: EmbeddedPlatform
    name: str

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.harness.service(self.name)(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.harness.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.harness.closing:
                    await self.harness.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # The apps serve at their root; the gateway adds /api/v1/<service> (the `servers`).
            "base-url": "http://testserver",
            "seed": SEED,
            "generation": {
                "mode": "all",
                "deterministic": True,
                # Anonymous means no Authorization header at all; the others send their token.
                "with-security-parameters": False,
                "max-examples": MAX_EXAMPLES,
            },
            # Ids seen in answers are not reused: callers aim only where _target sends them.
            "phases": {"coverage": {"extra-data-sources": {"responses": False}}},
        }
    )


HARNESS = EmbeddedPlatform()
_DOCUMENTS = openapi_documents()


def _schema(name: str) -> Any:
    schema = schemathesis.openapi.from_dict(_DOCUMENTS[name], config=_config())
    schema.app = ServiceApp(HARNESS, name)  # reached through Schemathesis' ASGI transport
    return schema


users = _schema("users")
auth = _schema("auth")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    HARNESS.data_dir = tmp_path_factory.mktemp("schemathesis")
    HARNESS.closing = False
    try:
        with get_client(users.app):  # starts the platform on Schemathesis' loop
            pass
        yield HARNESS
    finally:
        if HARNESS.running:
            HARNESS.closing = True
            with get_client(users.app):  # a running lifespan, whose shutdown stops the platform
                pass
        shutdown_lifespans()


def _target(case: Any, caller: Caller, harness: EmbeddedPlatform) -> None:
    """Aim half of the valid ``userId``s drawn at the caller's own profile or at a victim."""
    key = (case.method.upper(), case.operation.path)
    value = (case.path_parameters or {}).get("userId")
    if caller.account is None or not isinstance(value, str):
        return
    try:
        drawn = uuid.UUID(value)
    except ValueError:
        return  # a negative case: keep the invalid value
    if drawn.int % 2:
        return
    if key in OWN_ID_OPERATIONS:
        case.path_parameters["userId"] = str(caller.account.id)
    elif key in VICTIM_OPERATIONS:
        victims = harness.victims
        case.path_parameters["userId"] = str(victims[drawn.int % len(victims)])


def _fresh_sign_in(caller: Account) -> dict[str, str]:
    answer = auth["/login"]["POST"].Case(body={"email": caller.email, "password": PASSWORD}).call()
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['accessToken']}"}


def _run(case: Any, caller_name: str, harness: EmbeddedPlatform) -> None:
    caller = harness.callers[caller_name]
    _target(case, caller, harness)
    headers = caller.headers
    if caller.account is not None and (case.method.upper(), case.operation.path) in SESSION_ENDING:
        headers = _fresh_sign_in(caller.account)
    case.call_and_validate(headers=headers, checks=CHECKS)


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@users.parametrize()
@FUZZ
def test_users_service_anonymous(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "anonymous", harness)


@users.parametrize()
@FUZZ
def test_users_service_user(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "user", harness)


@users.parametrize()
@FUZZ
def test_users_service_admin(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "admin", harness)


@auth.parametrize()
@FUZZ
def test_auth_service_anonymous(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "anonymous", harness)


@auth.parametrize()
@FUZZ
def test_auth_service_user(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "user", harness)


@auth.parametrize()
@FUZZ
def test_auth_service_admin(case: Any, harness: EmbeddedPlatform) -> None:
    _run(case, "admin", harness)


# --------------------------------------------------------------------------------------------
# Answers random generation cannot reach, checked against the same schemas with the same checks.


def _challenge() -> str:
    verifier = base64.urlsafe_b64encode(b"v" * 48).rstrip(b"=")
    return base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()


def _authorize_form(email: str, password: str) -> dict[str, str]:
    return {
        "email": email,
        "password": password,
        "client_id": OAUTH_CLIENT,
        "redirect_uri": OAUTH_REDIRECT,
        "code_challenge": _challenge(),
        "code_challenge_method": "S256",
        "response_type": "code",
        "state": "xyz",
    }


def test_the_sign_in_page_is_documented(harness: EmbeddedPlatform) -> None:
    case = auth["/authorize"]["GET"].Case(
        query={
            "response_type": "code",
            "client_id": OAUTH_CLIENT,
            "redirect_uri": OAUTH_REDIRECT,
            "code_challenge": _challenge(),
            "code_challenge_method": "S256",
        }
    )
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith("text/html")


def test_a_wrong_password_on_the_sign_in_page_is_documented(harness: EmbeddedPlatform) -> None:
    account = harness.callers["user"].account
    assert account is not None
    case = auth["/authorize"]["POST"].Case(
        body=_authorize_form(account.email, "not the password"),
        media_type="application/x-www-form-urlencoded",
    )
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == 401
    assert response.headers["content-type"][0].startswith("text/html")


def test_the_redirect_with_a_code_is_documented(harness: EmbeddedPlatform) -> None:
    account = harness.callers["user"].account
    assert account is not None
    case = auth["/authorize"]["POST"].Case(
        body=_authorize_form(account.email, PASSWORD),
        media_type="application/x-www-form-urlencoded",
    )
    response = case.call_and_validate(checks=CHECKS, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"][0].startswith(OAUTH_REDIRECT + "?code=")


async def test_deleting_the_last_administrator_is_documented(platform: Platform) -> None:
    """A conflict (409), in the documented error shape: the platform keeps one admin."""
    admin = await make_admin(platform)
    response = await platform.client.delete(
        f"/api/v1/users/profiles/{admin.id}", headers=admin.headers
    )
    assert response.status_code == 409, response.text
    case = users["/profiles/{userId}"]["DELETE"].Case(path_parameters={"userId": str(admin.id)})
    case.validate_response(response, checks=CHECKS)
