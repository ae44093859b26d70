"""Helpers that hold a direct route (``panthera.kernel.http.direct``) to its FastAPI endpoint.

A route is asked the same thing twice: once as it is (direct path first), once with its
route application swapped for FastAPI's alone. The two answers must be the same bytes,
apart from the values that differ between any two requests (a request id, a new row's
id), which are paired up and checked to have the same shape.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER

# Headers that differ between any two requests.
_PER_REQUEST_HEADERS = frozenset({"date", "x-request-id", "traceparent"})
# Body members whose values are made afresh for each request: a request id, new rows' ids.
VOLATILE = frozenset({"requestId", "reservationId", "paymentId", "providerPaymentId", "orderId"})
_HEX = re.compile(r"[0-9a-f]")


T = TypeVar("T")


def on_a_fixed_clock(module: Any, now: datetime, make: Callable[[], T]) -> Iterator[T]:
    """A module fixture's body: ``make()`` with ``module._now`` answering ``now`` (so that
    both paths' answers carry the same times), closed (``close()``) at the end."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_now", lambda: now)
        fixture = make()
        try:
            yield fixture
        finally:
            fixture.close()  # type: ignore[attr-defined]


def stop_on_own_loop(loop: asyncio.AbstractEventLoop, client: Any, platform: Any) -> None:
    """Close a service a test runs on an event loop of its own, then the loop."""
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(platform.stop())
    loop.close()


# Who calls an internal route: the internal token as each kind of caller sends it.
INTERNAL_CALLERS = ("good", "missing", "wrong", "empty", "good-then-wrong", "wrong-then-good")


def internal_token_headers(token: str, caller: str) -> list[tuple[str, str | bytes]]:
    """The internal-token headers of ``caller`` (one of :data:`INTERNAL_CALLERS`)."""
    tokens = {
        "good": [token],
        "missing": [],
        "wrong": ["not-the-token"],
        "empty": [""],
        "good-then-wrong": [token, "not-the-token"],
        "wrong-then-good": ["not-the-token", token],
    }[caller]
    return [(INTERNAL_TOKEN_HEADER, value) for value in tokens]


def route_of(app: FastAPI, method: str, path: str) -> APIRoute:
    (route,) = [
        route
        for route in app.routes
        if isinstance(route, APIRoute) and route.path == path and method in route.methods
    ]
    return route


@contextmanager
def endpoint_calls(route: APIRoute) -> Iterator[list[None]]:
    """The calls FastAPI makes of the route's endpoint function while inside the block."""
    calls: list[None] = []
    original = route.dependant.call
    assert original is not None

    @functools.wraps(original)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        return await original(*args, **kwargs)

    route.dependant.call = counted
    try:
        yield calls
    finally:
        route.dependant.call = original


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        headers = tuple(
            (name, value)
            for name, value in response.headers.multi_items()
            if name not in _PER_REQUEST_HEADERS
        )
        return cls(response.status_code, headers, response.content)

    def json(self) -> Any:
        return json.loads(self.body)


def _shape(value: str) -> str:
    return _HEX.sub("x", value)


def _volatile_pairs(first: Any, second: Any, pairs: dict[str, str]) -> None:
    if isinstance(first, dict) and isinstance(second, dict):
        for key in first.keys() & second.keys():
            a, b = first[key], second[key]
            if key in VOLATILE and isinstance(a, str) and isinstance(b, str):
                assert _shape(a) == _shape(b), (key, a, b)
                pairs[b] = a
            else:
                _volatile_pairs(a, b, pairs)
    elif isinstance(first, list) and isinstance(second, list):
        for a, b in zip(first, second, strict=False):
            _volatile_pairs(a, b, pairs)


def as_first(first: Answer, second: Answer, renames: dict[str, str]) -> Answer:
    """``second`` with ``renames`` (its own names for what ``first`` calls otherwise,
    all of the same length) and its fresh values put as ``first`` has them."""
    pairs = dict(renames)
    if first.body[:1] in (b"{", b"[") and second.body[:1] in (b"{", b"["):
        with suppress(ValueError):
            _volatile_pairs(first.json(), second.json(), pairs)
    body = second.body
    headers = second.headers
    for theirs, ours in pairs.items():
        assert len(theirs) == len(ours), (theirs, ours)
        body = body.replace(theirs.encode(), ours.encode())
        headers = tuple((name, value.replace(theirs, ours)) for name, value in headers)
    return Answer(second.status, headers, body)


def reads_as_fastapi(model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The model the direct path reads from ``body`` (None when it declines), after
    checking that FastAPI's reading (``json.loads``, then validation) gives the same."""
    try:
        direct = model.model_validate_json(body)
    except ValidationError:
        return None
    # FastAPI's reading of a JSON body: Starlette's Request.json, then the body field's
    # validation of what it got.
    loaded = json.loads(body)
    assert model.model_validate(loaded, from_attributes=True) == direct, body
    return direct
