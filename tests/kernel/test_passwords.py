"""argon2id password hashing and the password policy."""

from __future__ import annotations

import asyncio
import base64
import time
import unicodedata
from collections.abc import Callable

import argon2
import pytest

from panthera.kernel.security.passwords import (
    COMMON,
    INVALID_CHARACTERS,
    MATCHES_EMAIL,
    TOO_LONG,
    TOO_SHORT,
    PasswordHasher,
    PasswordPolicy,
    common_passwords,
)

EIGHT = " pässw0 "  # 8 characters, spaces at both ends
ONE_TWO_EIGHT = " " + "é🔒x" * 42 + " "  # 128 characters, 170 UTF-8 bytes


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy()


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


# --- hashing ---------------------------------------------------------------------


def test_stored_hash_is_argon2id_with_at_least_owasp_parameters(hasher: PasswordHasher) -> None:
    _, variant, version, parameters, salt, digest = hasher.hash("correct horse").split("$")
    costs = dict(item.split("=") for item in parameters.split(","))

    assert variant == "argon2id"
    assert version == "v=19"
    assert int(costs["m"]) >= 19_456
    assert int(costs["t"]) >= 2
    assert int(costs["p"]) == 1
    assert len(b64decode(salt)) == 16
    assert len(b64decode(digest)) == 32


def test_two_hashes_of_one_password_have_different_salts(hasher: PasswordHasher) -> None:
    first, second = hasher.hash("correct horse"), hasher.hash("correct horse")
    assert first.split("$")[4] != second.split("$")[4]
    assert hasher.verify(first, "correct horse")
    assert hasher.verify(second, "correct horse")


@pytest.mark.parametrize("password", [EIGHT, ONE_TWO_EIGHT], ids=["8 chars", "128 chars"])
def test_passwords_at_the_length_limits_are_taken_unmodified(
    hasher: PasswordHasher, policy: PasswordPolicy, password: str
) -> None:
    assert len(password) in (8, 128)
    assert policy.check(password) == []
    stored = hasher.hash(password)
    assert hasher.verify(stored, password)
    assert not hasher.verify(stored, password.strip())
    assert not hasher.verify(stored, password[:-1])


def test_no_unicode_normalization(hasher: PasswordHasher) -> None:
    composed = "café crème"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert not hasher.verify(hasher.hash(composed), decomposed)


@pytest.mark.parametrize(
    "stored",
    ["", "garbage", "$argon2id$v=19$m=19456,t=2,p=1$AAAA$BBBB", "$argon2id$é", "$2b$12$abc"],
)
def test_verify_returns_false_for_malformed_hashes(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, "correct horse") is False
    assert hasher.needs_rehash(stored) is True


def test_verify_returns_false_for_a_wrong_password(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horsE") is False
    assert hasher.verify(stored, "\ud800 lone surrogate") is False


def test_needs_rehash(hasher: PasswordHasher) -> None:
    weaker = PasswordHasher(memory_cost=8_192, time_cost=1).hash("correct horse")
    argon2i = argon2.PasswordHasher(
        time_cost=2, memory_cost=19_456, parallelism=1, type=argon2.Type.I
    ).hash("correct horse")

    assert hasher.needs_rehash(weaker)
    assert hasher.needs_rehash(argon2i)
    assert not hasher.needs_rehash(hasher.hash("correct horse"))
    # Old hashes still let their owners in, so the rehash can happen at login.
    assert hasher.verify(weaker, "correct horse")
    assert hasher.verify(argon2i, "correct horse")


def fastest_cpu_seconds(
    actions: dict[str, Callable[[], object]], runs: int = 5
) -> dict[str, float]:
    """Each action's least CPU time over ``runs``, the actions taking turns: CPU time
    and interleaving keep a busy machine's scheduling out of the comparison."""
    best = dict.fromkeys(actions, float("inf"))
    for _ in range(runs):
        for name, action in actions.items():
            started = time.process_time()
            action()
            best[name] = min(best[name], time.process_time() - started)
    return best


def test_dummy_verify_costs_about_what_a_real_verify_does(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert hasher.dummy_verify("correct horse") is False

    costs = fastest_cpu_seconds(
        {
            "real": lambda: hasher.verify(stored, "wrong guess"),
            "dummy": lambda: hasher.dummy_verify("wrong guess"),
        }
    )

    assert 0.5 <= costs["dummy"] / costs["real"] <= 2.0


async def test_async_variants_leave_the_event_loop_free(hasher: PasswordHasher) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.001)
            ticks += 1

    async def work() -> bool:
        stored = await hasher.hash_async("correct horse")
        ok = await hasher.verify_async(stored, "correct horse")
        assert await hasher.dummy_verify_async("correct horse") is False
        done.set()
        return ok

    _, ok = await asyncio.gather(ticker(), work())
    assert ok
    assert ticks >= 1


# --- policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        pytest.param(EIGHT[:-1], TOO_SHORT, id="7 chars"),
        pytest.param("é" * 7, TOO_SHORT, id="7 chars, 14 bytes"),
        pytest.param(ONE_TWO_EIGHT + "x", TOO_LONG, id="129 chars"),
        pytest.param("\ud800" * 10, INVALID_CHARACTERS, id="lone surrogates"),
    ],
)
def test_policy_refuses(policy: PasswordPolicy, password: str, problem: str) -> None:
    assert problem in policy.check(password)


@pytest.mark.parametrize("password", ["password123", "qwertyuiop", "PassWord123", "iloveyou"])
def test_policy_refuses_common_passwords(policy: PasswordPolicy, password: str) -> None:
    assert policy.check(password) == [COMMON]


def test_policy_accepts_an_uncommon_password(policy: PasswordPolicy) -> None:
    assert policy.check("plinth-otter-sevens") == []


def test_common_password_list_is_real() -> None:
    passwords = common_passwords()
    assert 9_000 <= len(passwords) <= 20_000
    assert {"123456", "password", "qwerty", "letmein"} <= passwords
    assert all(entry == entry.lower() for entry in passwords)


@pytest.mark.parametrize("password", ["alice.smith@example.com", "Alice.Smith"])
def test_policy_refuses_the_email_or_its_local_part(policy: PasswordPolicy, password: str) -> None:
    assert policy.check(password, email="alice.smith@example.com") == [MATCHES_EMAIL]
    assert policy.check(password, email="bob.jones@example.com") == []
