"""Helpers that hold a direct route (``panthera.kernel.http.direct``) to its FastAPI endpoint.

A route is asked the same thing twice: once as it is (direct path first), once with its
route application swapped for FastAPI's alone. The two answers must be the same bytes,
apart from the values that differ between any two requests (a request id, a new row's
id), which are paired up and checked to have the same shape.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel, ValidationError

# Headers that differ between any two requests.
_PER_REQUEST_HEADERS = frozenset({"date", "x-request-id", "traceparent"})
# Body members whose values are made afresh for each request: a request id, new rows' ids.
VOLATILE = frozenset({"requestId", "reservationId", "paymentId", "providerPaymentId", "orderId"})
_HEX = re.compile(r"[0-9a-f]")


def route_of(app: FastAPI, method: str, path: str) -> APIRoute:
    (route,) = [
        route
        for route in app.routes
        if isinstance(route, APIRoute) and route.path == path and method in route.methods
    ]
    return route


@contextmanager
def fastapi_only(route: APIRoute) -> Iterator[None]:
    """``route`` answered by its FastAPI endpoint alone, as it was before its direct path."""
    direct = route.app
    route.app = request_response(APIRoute.get_route_handler(route))
    try:
        yield
    finally:
        route.app = direct


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
