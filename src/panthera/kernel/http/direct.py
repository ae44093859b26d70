"""Routes with a direct path for the requests that need none of FastAPI's per-request work.

FastAPI resolves a route's dependencies and validates each query parameter on every
request, re-deriving from the parameter's annotation what it is each time: for a list
route with ten parameters that is more CPU than the database spends on the page. A
direct route keeps the FastAPI endpoint (its OpenAPI entry, its validation, its
errors) and puts a handler in front of it that answers the requests it fully
understands and passes on everything else. The handler must decline (answer
``None``) whenever FastAPI could answer differently, so that a malformed request
gets exactly the error it always got.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

DirectHandler = Callable[[Request], Awaitable[Response | None]]

# What pydantic reads as a boolean from a query string, in lax mode, lower-cased.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def direct_route(handler: DirectHandler) -> type[APIRoute]:
    """A route class whose requests go to ``handler`` first, then to the FastAPI endpoint
    when ``handler`` answers ``None``."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            full = super().get_route_handler()

            async def route_handler(request: Request) -> Response:
                response = await handler(request)
                if response is None:
                    return await full(request)
                return response

            return route_handler

    return DirectRoute


class Declined(Exception):
    """The query is not one the direct path answers: FastAPI's endpoint takes it."""


def single_values(query_string: bytes, known: frozenset[str]) -> dict[str, str]:
    """The query's known parameters, each given once and not empty; :class:`Declined`
    otherwise (FastAPI would take the last of repeated values and reject empty numbers,
    and only it words those errors)."""
    values: dict[str, str] = {}
    if not query_string:
        return values
    # Decoded as Starlette decodes a query string, so both paths read the same values.
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name not in known:
            # FastAPI ignores parameters a route does not declare.
            continue
        if not value or name in values:
            raise Declined
        values[name] = value
    return values


def bounded_int(text: str | None, default: int, low: int, high: int) -> int:
    """A plain decimal integer within ``[low, high]``; :class:`Declined` for anything else."""
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > len(str(high)):
        raise Declined
    value = int(text)
    if not low <= value <= high:
        raise Declined
    return value


def bounded_text(text: str | None, max_length: int) -> str | None:
    """Text of at most ``max_length`` characters; :class:`Declined` when longer."""
    if text is not None and len(text) > max_length:
        raise Declined
    return text


def boolean(text: str | None) -> bool | None:
    """A boolean as pydantic reads one from a query string; :class:`Declined` otherwise."""
    if text is None:
        return None
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise Declined
