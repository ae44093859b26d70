"""A direct route's body helpers and errors answer as its FastAPI endpoint does."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import Message

from panthera.kernel.errors import Conflict
from panthera.kernel.http.app import add_routes, create_app
from panthera.kernel.http.direct import (
    body_as,
    direct_route,
    fastapi_only,
    model_response,
)
from panthera.kernel.security.permissions import (
    INTERNAL_TOKEN_HEADER,
    internal_only,
    is_internal_caller,
)
from tests.direct_paths import Answer, as_first, endpoint_calls, route_of

TOKEN = "internal-secret"
INTERNAL = {INTERNAL_TOKEN_HEADER: TOKEN, "content-type": "application/json"}


class ThingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=20)
    count: int = Field(default=1, ge=0, le=10)
    tags: list[str] = Field(default_factory=list, max_length=3)


class Part(BaseModel):
    partId: uuid.UUID
    label: str | None


class ThingOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    kind: str = Field(alias="type")
    count: int
    made_at: datetime = Field(serialization_alias="madeAt")
    parts: list[Part]
    note: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def _thing(body: ThingIn) -> ThingOut:
    """What both paths do with a thing: the errors a service raises, or its answer."""
    if body.name == "conflict":
        raise Conflict("Taken.", headers={"Retry-After": "3"}, holder="someone")
    if body.name == "http":
        raise HTTPException(418, "A teapot.")
    return ThingOut(
        name=body.name,
        type="widget",
        count=body.count,
        made_at=datetime(2024, 5, 1, 12, 30, 15, 120000, tzinfo=UTC),
        parts=[
            Part(partId=uuid.UUID(int=index), label=tag or None)
            for index, tag in enumerate(body.tags)
        ],
        extra={"ü": ["ß", 1.5, None]},
    )


async def _thing_direct(request: Request) -> Response | None:
    if not is_internal_caller(request):
        return None
    body = await body_as(ThingIn, request)
    if body is None:
        return None
    return model_response(_thing(body), status_code=201)


async def make_thing(body: ThingIn) -> ThingOut:
    return _thing(body)


def _app() -> FastAPI:
    app = create_app(name="things", title="Things", description="", max_body_bytes=1000, checks={})
    app.state.internal_token = TOKEN
    router = APIRouter()
    router.add_api_route(
        "/things",
        make_thing,
        methods=["POST"],
        status_code=201,
        response_model=ThingOut,
        dependencies=[Depends(internal_only)],
        route_class_override=direct_route(_thing_direct),
    )
    add_routes(app, router)
    return app


@pytest.fixture
async def things() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = _app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://things") as client:
        yield app, client


async def _both(
    app: FastAPI, client: httpx.AsyncClient, **request: Any
) -> tuple[Answer, Answer, int]:
    route = route_of(app, "POST", "/things")
    with endpoint_calls(route) as calls:
        routed = Answer.of(await client.post("/things", **request))
    with fastapi_only(route):
        endpoint = Answer.of(await client.post("/things", **request))
    return routed, as_first(routed, endpoint, {}), len(calls)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"name": "lamp", "count": 3, "tags": ["a", "", "c"]}', 201),
        (b'{"name": "lamp"}', 201),
        # Raised from the shared work: the app's handlers answer both paths alike.
        (b'{"name": "conflict"}', 409),
        (b'{"name": "http"}', 418),
    ],
)
async def test_what_the_direct_path_answers_is_what_fastapi_answers(
    things: tuple[FastAPI, httpx.AsyncClient], content: bytes, status: int
) -> None:
    app, client = things
    routed, endpoint, calls = await _both(app, client, content=content, headers=INTERNAL)
    assert calls == 0, "the direct path left the request to FastAPI"
    assert routed.status == status
    assert routed == endpoint


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"name": "lamp"}', {"content-type": "application/json"}),
        (b'{"name": "lamp"}', {**INTERNAL, INTERNAL_TOKEN_HEADER: "wrong"}),
        (b'{"name": "lamp"}', {**INTERNAL, "content-type": "application/json; charset=utf-8"}),
        (b'{"name": "lamp"}', {**INTERNAL, "content-type": "application/merge-patch+json"}),
        (b'{"name": "lamp"}', {**INTERNAL, "content-type": "text/plain"}),
        (b'{"name": "lamp"}', {INTERNAL_TOKEN_HEADER: TOKEN}),
        (b'{"name": "lamp"', INTERNAL),
        (b'{"name": ""}', INTERNAL),
        (b'{"name": "lamp", "colour": "red"}', INTERNAL),
        (b"", INTERNAL),
        ('{"name": "lamp\udc80"}'.encode("utf-8", "surrogatepass"), INTERNAL),
        (b'\xef\xbb\xbf{"name": "lamp"}', INTERNAL),
    ],
)
async def test_what_the_direct_path_declines_fastapi_answers(
    things: tuple[FastAPI, httpx.AsyncClient], content: bytes, headers: dict[str, str]
) -> None:
    app, client = things
    routed, endpoint, calls = await _both(app, client, content=content, headers=headers)
    assert calls == 1 or routed.status >= 400
    assert routed == endpoint


async def test_a_body_streamed_past_the_limit_is_413_on_both_paths(
    things: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = things

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        yield b"x" * 2000
        yield b'"}'

    route = route_of(app, "POST", "/things")
    routed = await client.post("/things", content=chunks(), headers=INTERNAL)
    with fastapi_only(route):
        endpoint = await client.post("/things", content=chunks(), headers=INTERNAL)
    assert routed.status_code == 413
    assert as_first(Answer.of(routed), Answer.of(endpoint), {}) == Answer.of(routed)


async def _call(app: FastAPI, messages: list[Message]) -> tuple[int, bytes]:
    """A raw ASGI call whose client sends ``messages`` and then waits."""
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/things",
        "raw_path": b"/things",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in INTERNAL.items()],
        "client": ("127.0.0.1", 1),
        "server": ("things", 80),
        "state": {},
    }
    await app(scope, receive, send)
    (start,) = [message for message in sent if message["type"] == "http.response.start"]
    body = b"".join(message.get("body", b"") for message in sent if "body" in message)
    return start["status"], body


async def test_a_client_gone_mid_body_gets_fastapis_answer_not_a_hang() -> None:
    app = _app()
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"name": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    routed = await _call(app, messages)
    with fastapi_only(route_of(app, "POST", "/things")):
        endpoint = await _call(app, messages)
    assert routed[0] == endpoint[0] == 400
    routed_problem, endpoint_problem = json.loads(routed[1]), json.loads(endpoint[1])
    assert routed_problem.pop("requestId") != endpoint_problem.pop("requestId")
    assert routed_problem == endpoint_problem
    assert routed_problem["detail"] == "There was an error parsing the body"
