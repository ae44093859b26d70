"""Spans continue the trace a request or event arrived with and hand their own on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from panthera.kernel import tracing
from panthera.kernel.http.middleware import PlatformMiddleware
from panthera.kernel.observability import current_traceparent

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_a_span_continues_the_incoming_trace(exported: InMemorySpanExporter) -> None:
    with tracing.continue_trace("work", kind=SpanKind.CONSUMER, traceparent=INCOMING) as (
        _span,
        passed_on,
    ):
        assert passed_on is not None
        _version, trace_id, span_id, _flags = passed_on.split("-")
    assert trace_id == INCOMING.split("-")[1]
    assert span_id != INCOMING.split("-")[2]
    (span,) = exported.get_finished_spans()
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == INCOMING.split("-")[2]
    assert format(span.context.span_id, "016x") == span_id


def test_without_an_exporter_the_trace_is_passed_on_unchanged() -> None:
    with tracing.continue_trace("work", kind=SpanKind.SERVER, traceparent=INCOMING) as (
        _span,
        passed_on,
    ):
        assert passed_on == INCOMING


async def test_every_request_is_a_server_span_named_by_its_route(
    exported: InMemorySpanExporter,
) -> None:
    app = FastAPI()
    seen: list[str | None] = []

    @app.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        seen.append(current_traceparent())
        return {"id": thing_id}

    wrapped = PlatformMiddleware(app, service="things", max_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://test"
    ) as client:
        answer = await client.get("/things/7", headers={"traceparent": INCOMING})
        assert answer.status_code == 200
        assert (await client.get("/healthz")).status_code == 404
    (span,) = exported.get_finished_spans()
    assert span.name == "GET /things/{thing_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    # What the route saw, and would pass to the services it calls, is this span.
    assert seen == [f"00-{INCOMING.split('-')[1]}-{format(span.context.span_id, '016x')}-01"]


async def test_without_an_exporter_a_request_passes_its_trace_on_unchanged() -> None:
    app = FastAPI()
    seen: list[str | None] = []

    @app.get("/things")
    async def things() -> list[int]:
        seen.append(current_traceparent())
        return []

    wrapped = PlatformMiddleware(app, service="things", max_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://test"
    ) as client:
        assert (await client.get("/things", headers={"traceparent": INCOMING})).is_success
        assert (await client.get("/things", headers={"traceparent": "00-bad"})).is_success
    assert seen[0] == INCOMING
    # A missing or malformed one is replaced by a new trace.
    assert seen[1] is not None
    assert seen[1] != "00-bad"
    _version, trace_id, span_id, flags = seen[1].split("-")
    assert (len(trace_id), len(span_id), flags) == (32, 16, "01")
