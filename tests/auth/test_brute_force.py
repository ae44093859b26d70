"""Online guessing: sign-in throttling, its logging and recovery, and account enumeration.

Timing comparisons: each answer that could reveal whether an account exists is
timed 15 times per side, alternating which side goes first so that drift (a
warming cache, the outbox relay waking up, another process on the machine)
hits both sides alike, and the medians are compared. The leaks this guards
against are tens of milliseconds: an argon2 verification skipped for unknown
addresses (40-100 ms here), or the extra credentials call and writes of a new
registration (about 20 ms). 15 ms of tolerance is below those, yet above the
scheduling noise of a loaded two-core CI machine, where one request can stall
for several milliseconds and a whole batch can drift by 10 ms or more. A batch
that misses is measured again, up to three batches: noise rarely strikes three
times running, a real difference shows in every batch. Smaller differences
(a few ms) are below what this test can resolve on such a machine.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from panthera.kernel.settings import Settings
from tests.conftest import (
    PASSWORD,
    Platform,
    login,
    register_and_login,
    start_platform,
    unique_email,
)

LOGIN = "/api/v1/users/login"
AUTH_LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/users/register"
RESET = "/api/v1/users/password-reset"
RESET_CONFIRM = "/api/v1/users/password-reset/confirm"
CHANGE_PASSWORD = "/api/v1/auth/password"
PER_ACCOUNT = 5
PER_ADDRESS = 8
TIMING_ROUNDS = 15
TIMING_TOLERANCE_SECONDS = 0.015
WARM_UP_ROUNDS = 3
# Members that name the request rather than describe the outcome.
PER_REQUEST_MEMBERS = {"requestId", "instance"}


async def _platform(settings: Settings) -> AsyncIterator[Platform]:
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


@pytest.fixture
async def throttled(settings_factory: Callable[..., Settings]) -> AsyncIterator[Platform]:
    """A platform with small sign-in budgets."""
    settings = settings_factory(
        login_attempts_per_account=PER_ACCOUNT, login_attempts_per_address=PER_ADDRESS
    )
    async for platform in _platform(settings):
        yield platform


@pytest.fixture
async def unthrottled(settings_factory: Callable[..., Settings]) -> AsyncIterator[Platform]:
    """A platform whose sign-in budgets are out of reach, for timing many failures."""
    settings = settings_factory(
        login_attempts_per_account=100_000, login_attempts_per_address=100_000
    )
    async for platform in _platform(settings):
        yield platform


def _client_at(platform: Platform, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.app, client=(address, 40000)),
        base_url="http://testserver",
        timeout=30,
    )


async def _attempt(
    client: httpx.AsyncClient,
    address: str,
    password: str,
    path: str = LOGIN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(path, json={"email": address, "password": password}, headers=headers)


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["status"] == 429
    assert body["code"] == "rate_limited"
    assert "accessToken" not in response.text


def _messages(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "panthera.auth" and record.getMessage() == message
    ]


def _token_from_mail(platform: Platform, address: str, path: str) -> str:
    for message_file in sorted(platform.outbox_dir.glob("*.eml")):
        message = email.message_from_bytes(message_file.read_bytes(), policy=email.policy.default)
        if message["To"] == address:
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            match = re.search(re.escape(path) + r"\?token=([\w-]+)", body.get_content())
            if match:
                return match.group(1)
    raise AssertionError(f"no mail to {address} with a {path} link")


async def test_failures_against_one_account_are_capped_whatever_the_address(
    throttled: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="panthera.auth")
    victim = await register_and_login(throttled.client)
    # A botnet: every guess from another address, on both sign-in routes.
    clients = [_client_at(throttled, f"198.51.100.{n}") for n in range(1, PER_ACCOUNT + 4)]
    try:
        for n, client in enumerate(clients[:PER_ACCOUNT]):
            path = LOGIN if n % 2 else AUTH_LOGIN
            failed = await _attempt(client, victim.email, f"guess number {n}", path)
            assert failed.status_code == 401, failed.text
        # The budget is spent: further guesses are refused unchecked, wherever they come from.
        for client in clients[PER_ACCOUNT : PER_ACCOUNT + 2]:
            _assert_throttled(await _attempt(client, victim.email, "another guess"))
        _assert_throttled(await _attempt(clients[-1], victim.email, "one more", AUTH_LOGIN))
        # Even the right password does not get through while the account is locked,
        # so a lucky guess after the limit cannot be told from a wrong one.
        _assert_throttled(await _attempt(clients[-1], victim.email, victim.password))
    finally:
        for client in clients:
            await client.aclose()

    failures = _messages(caplog, "sign-in failed")
    assert len(failures) == PER_ACCOUNT
    assert {record.__dict__["address"] for record in failures} == {
        f"198.51.100.{n}" for n in range(1, PER_ACCOUNT + 1)
    }
    throttles = _messages(caplog, "sign-in throttled")
    assert len(throttles) == 4
    assert all(record.levelno >= logging.WARNING for record in failures + throttles)
    assert all(record.__dict__["account_failures"] >= PER_ACCOUNT for record in throttles)
    # The logs identify the account without writing down its address or the guesses.
    logged = " ".join(str(record.__dict__) for record in failures + throttles)
    assert victim.email not in logged
    assert "guess number" not in logged
    assert victim.password not in logged


async def test_failures_from_one_address_are_capped_across_accounts(
    throttled: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="panthera.auth")
    real = await register_and_login(throttled.client)
    attacker = _client_at(throttled, "192.0.2.66")
    try:
        # Password spraying: one guess per account, from one address that claims,
        # through every forwarding header there is, to be somewhere else each time.
        for n in range(PER_ADDRESS):
            spoofed = f"203.0.113.{100 + n}"
            failed = await _attempt(
                attacker,
                real.email if n == 0 else unique_email("spray"),
                "Spring2024!",
                LOGIN if n % 2 else AUTH_LOGIN,
                headers={
                    "X-Forwarded-For": spoofed,
                    "X-Client-IP": spoofed,
                    "X-Real-IP": spoofed,
                    "Forwarded": f"for={spoofed}",
                },
            )
            assert failed.status_code == 401, failed.text
        for path in (LOGIN, AUTH_LOGIN):
            _assert_throttled(await _attempt(attacker, unique_email("spray"), "Summer2024!", path))
        # The address is locked out even for a correct password...
        _assert_throttled(await _attempt(attacker, real.email, real.password))
    finally:
        await attacker.aclose()
    # ...but the account is not: its owner, elsewhere, still signs in.
    owner = _client_at(throttled, "198.51.100.200")
    try:
        assert (await _attempt(owner, real.email, real.password)).status_code == 200
    finally:
        await owner.aclose()

    failures = _messages(caplog, "sign-in failed")
    assert len(failures) == PER_ADDRESS
    assert {record.__dict__["address"] for record in failures} == {"192.0.2.66"}
    throttles = _messages(caplog, "sign-in throttled")
    assert len(throttles) == 3
    assert all(record.__dict__["address_failures"] >= PER_ADDRESS for record in throttles)


async def test_locked_out_owner_recovers_through_a_password_reset(throttled: Platform) -> None:
    owner = await register_and_login(throttled.client)
    clients = [_client_at(throttled, f"198.51.100.{n}") for n in range(10, 10 + PER_ACCOUNT)]
    try:
        for client in clients:
            assert (await _attempt(client, owner.email, "wrong guess!")).status_code == 401
    finally:
        for client in clients:
            await client.aclose()
    _assert_throttled(await _attempt(throttled.client, owner.email, owner.password))

    # The lock-out does not extend to the reset flow.
    asked = await throttled.client.post(RESET, json={"email": owner.email})
    assert asked.status_code == 202, asked.text
    await throttled.settle()
    token = _token_from_mail(throttled, owner.email, "/account/reset-password")
    new_password = "a fresh and unguessable passphrase"
    done = await throttled.client.post(
        RESET_CONFIRM, json={"token": token, "newPassword": new_password}
    )
    assert done.status_code == 204, done.text

    # Setting a new password lifts the lock: the owner is in, the old password is not.
    tokens = await login(throttled.client, owner.email, new_password)
    me = await throttled.client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['accessToken']}"}
    )
    assert me.status_code == 200
    old = await _attempt(throttled.client, owner.email, owner.password)
    assert old.status_code == 401


async def test_guessing_the_current_password_with_a_stolen_token_is_capped(
    throttled: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """Changing the password checks the current one: that check is throttled like sign-in."""
    caplog.set_level(logging.INFO, logger="panthera.auth")
    victim = await register_and_login(throttled.client)
    # The thief holds the victim's access token, but not the password.
    thieves = [_client_at(throttled, f"198.51.100.{n}") for n in range(30, 30 + PER_ACCOUNT + 1)]
    try:
        for n, thief in enumerate(thieves[:PER_ACCOUNT]):
            guess = await thief.post(
                CHANGE_PASSWORD,
                json={"currentPassword": f"guess {n}", "newPassword": "the thief's password"},
                headers=victim.headers,
            )
            assert guess.status_code == 401, guess.text
        _assert_throttled(
            await thieves[-1].post(
                CHANGE_PASSWORD,
                json={"currentPassword": victim.password, "newPassword": "the thief's password"},
                headers=victim.headers,
            )
        )
    finally:
        for thief in thieves:
            await thief.aclose()
    assert len(_messages(caplog, "sign-in failed")) == PER_ACCOUNT
    # The password is unchanged, and the account is locked for sign-in too until it cools down.
    _assert_throttled(await _attempt(throttled.client, victim.email, victim.password))


def _outcome(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return {key: value for key, value in body.items() if key not in PER_REQUEST_MEMBERS}


async def _timed(
    first: Callable[[], Awaitable[httpx.Response]],
    second: Callable[[], Awaitable[httpx.Response]],
) -> tuple[float, float, float, list[httpx.Response]]:
    """Medians of each call over TIMING_ROUNDS, and the median of their paired differences.

    Each round times both calls back to back, alternating which goes first: a
    slow spell on the shared machine then lands on both sides of a pair and
    cancels out of its difference, where it would skew one median alone.
    """
    timings: tuple[list[float], list[float]] = ([], [])
    differences: list[float] = []
    answers: list[httpx.Response] = []
    for n in range(TIMING_ROUNDS):
        order = ((0, first), (1, second)) if n % 2 == 0 else ((1, second), (0, first))
        pair = [0.0, 0.0]
        for side, call in order:
            started = time.perf_counter()
            response = await call()
            pair[side] = time.perf_counter() - started
            timings[side].append(pair[side])
            answers.append(response)
        differences.append(pair[0] - pair[1])
    return (
        statistics.median(timings[0]),
        statistics.median(timings[1]),
        statistics.median(differences),
        answers,
    )


async def _assert_same_timing(
    existing: Callable[[], Awaitable[httpx.Response]],
    missing: Callable[[], Awaitable[httpx.Response]],
    check: Callable[[httpx.Response], None],
) -> None:
    """The median paired difference of both calls is within TIMING_TOLERANCE_SECONDS.

    A batch spoilt by another process hogging the CPU is measured again, up to
    five batches: noise rarely strikes every time, while a real difference (an
    argon2 run or a database write on one side only) shows up in every batch.
    Every answer of every batch goes through ``check``.
    """
    for _ in range(WARM_UP_ROUNDS):  # first-use costs (pools, caches) are not the signal
        check(await existing())
        check(await missing())
    gaps = []
    for _ in range(5):
        existing_median, missing_median, difference, answers = await _timed(existing, missing)
        for response in answers:
            check(response)
        gaps.append(
            f"{existing_median * 1000:.1f} ms with an account, "
            f"{missing_median * 1000:.1f} ms without, paired difference {difference * 1000:.1f} ms"
        )
        if abs(difference) <= TIMING_TOLERANCE_SECONDS:
            return
    raise AssertionError("response time tells whether an account exists: " + "; ".join(gaps))


async def test_login_does_not_tell_unknown_emails_from_wrong_passwords(
    unthrottled: Platform,
) -> None:
    known = await register_and_login(unthrottled.client)
    client = unthrottled.client
    reference = await _attempt(client, known.email, "not the right password")
    assert reference.status_code == 401

    def same_answer(response: httpx.Response) -> None:
        assert response.status_code == 401
        for header in ("content-type", "www-authenticate", "retry-after"):
            assert response.headers.get(header) == reference.headers.get(header)
        assert _outcome(response) == _outcome(reference)

    await _assert_same_timing(
        lambda: _attempt(client, known.email, "not the right password"),
        lambda: _attempt(client, unique_email("nobody"), "not the right password"),
        same_answer,
    )


async def test_registration_does_not_tell_whether_an_email_is_taken(
    unthrottled: Platform,
) -> None:
    taken = await register_and_login(unthrottled.client)
    client = unthrottled.client

    def body(address: str) -> dict[str, str]:
        return {"email": address, "password": PASSWORD, "firstName": "Sam", "lastName": "Lee"}

    reference = await client.post(REGISTER, json=body(unique_email("new")))
    assert reference.status_code == 201
    ids: set[str] = set()

    def same_answer(response: httpx.Response) -> None:
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == reference.headers["content-type"]
        assert response.headers.get("location") == reference.headers.get("location")
        answer, expected = response.json(), reference.json()
        assert set(answer) == set(expected)
        for key in ("firstName", "lastName", "phoneNumber", "roles", "emailVerified"):
            assert answer[key] == expected[key], key
        # Every answer names a fresh id, the taken address's answers included.
        assert answer["id"] not in ids
        assert answer["id"] != str(taken.id)
        ids.add(answer["id"])

    await _assert_same_timing(
        lambda: client.post(REGISTER, json=body(taken.email)),
        lambda: client.post(REGISTER, json=body(unique_email("new"))),
        same_answer,
    )
    # The account itself was left alone.
    await login(client, taken.email, taken.password)


async def test_password_reset_request_does_not_tell_whether_an_email_is_known(
    unthrottled: Platform,
) -> None:
    known = await register_and_login(unthrottled.client)
    client = unthrottled.client
    reference = await client.post(RESET, json={"email": unique_email("nobody")})
    assert reference.status_code == 202

    def same_answer(response: httpx.Response) -> None:
        assert response.status_code == 202
        assert response.headers["content-type"] == reference.headers["content-type"]
        assert response.content == reference.content

    await _assert_same_timing(
        lambda: client.post(RESET, json={"email": known.email}),
        lambda: client.post(RESET, json={"email": unique_email("nobody")}),
        same_answer,
    )
