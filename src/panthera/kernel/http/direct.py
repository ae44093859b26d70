"""Routes with a direct path for the requests that need none of FastAPI's per-request work.

FastAPI resolves a route's dependencies and validates each query parameter on every
request, re-deriving from the parameter's annotation what it is each time: for a list
route with ten parameters that is more CPU than the database spends on the page. A
direct route keeps the FastAPI endpoint (its OpenAPI entry, its validation, its
errors) and puts a handler in front of it that answers the requests it fully
understands and passes on everything else. The handler must decline (answer
``None``) whenever FastAPI could answer differently, so that a malformed request
gets exactly the error it always got.

An exception a handler raises is answered by the app's exception handlers exactly
as one raised by the endpoint: both are raised inside the same route application.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute, request_response
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

DirectHandler = Callable[[Request], Awaitable[Response | None]]
Model = TypeVar("Model", bound=BaseModel)
JSON = "application/json"

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
                try:
                    response = await handler(request)
                except _UnreadBody as unread:
                    # The body is gone with the failure: FastAPI is given a request whose
                    # reading fails the same way, and answers it as it always does.
                    return await full(Request(request.scope, unread.receive))
                if response is None:
                    return await full(request)
                return response

            return route_handler

    return DirectRoute


@contextmanager
def fastapi_only(route: APIRoute) -> Iterator[None]:
    """``route`` answered by its FastAPI endpoint alone while inside the block, as it was
    before its direct path: what the direct path's tests and benches compare it with."""
    direct = route.app
    route.app = request_response(APIRoute.get_route_handler(route))
    try:
        yield
    finally:
        route.app = direct


class Declined(Exception):
    """The request is not one the direct path answers: FastAPI's endpoint takes it."""


class _UnreadBody(Exception):
    """Reading the body failed (the client went away, it was too large): FastAPI answers."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error

    async def receive(self) -> Message:
        raise self.error


async def json_body(request: Request) -> bytes:
    """The body of a request sent as plain ``application/json``; :class:`Declined` for any
    other content type (FastAPI reads ``+json`` types, parameters and a missing type in
    ways only it words the errors of)."""
    if request.headers.get("content-type") != JSON:
        raise Declined
    try:
        return await request.body()
    except Exception as exc:
        raise _UnreadBody(exc) from exc


def parsed(model: type[Model], body: bytes) -> Model:
    """``body`` read as ``model``; :class:`Declined` when it is not valid JSON of that model.

    Read from JSON in one pass, where FastAPI loads the JSON (``json.loads``) then
    validates what it got. For models of plain, bounded fields what the first accepts the
    second accepts too and reads the same; each direct route's tests hold its model to
    that. A body refused here goes to FastAPI, which words the error.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError:
        raise Declined from None


async def body_as(model: type[Model], request: Request) -> Model | None:
    """The request's plain JSON body read as ``model`` (:func:`json_body`, :func:`parsed`);
    None when the direct path declines it."""
    try:
        return parsed(model, await json_body(request))
    except Declined:
        return None


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` answered as FastAPI answers a route's response model of that class: the
    same JSON (by alias, nothing left out), the same status and content type."""
    return Response(model.model_dump_json(by_alias=True), status_code=status_code, media_type=JSON)


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
