"""The saga's reservation routes answer on their direct path exactly as FastAPI's endpoints do.

Each request is sent twice, once through the route (direct path first) and once through
FastAPI's endpoint alone, under references of the same length that differ by one
letter, on the same stock (a reservation made is released before the next request).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from panthera.catalog import inventory
from panthera.catalog import service as catalog_service
from panthera.catalog.models import Reservation
from panthera.catalog.schemas import ReservationIn
from panthera.catalog.search import search_for
from panthera.kernel.http.direct import fastapi_only
from panthera.runtime.platform import Platform
from tests.conftest import make_settings
from tests.direct_paths import (
    INTERNAL_CALLERS,
    Answer,
    as_first,
    endpoint_calls,
    internal_token_headers,
    on_a_fixed_clock,
    reads_as_fastapi,
    route_of,
    stop_on_own_loop,
)

RESERVATIONS = "/internal/reservations"
COMMIT = "/internal/reservations/{reference}/commit"
# Where a request's reference goes; each path gets a reference of its own.
REF = "@REF@"
# Every timestamp the catalog writes, so that both paths' expiresAt are the same; far
# ahead, so that the expiry sweeper (on the wall clock) never takes a reservation.
NOW = datetime.now(UTC).replace(microsecond=123456) + timedelta(days=365)
UNKNOWN = "00000000-0000-4000-8000-000000000000"
MISSING = object()


class _Catalog:
    """A catalog service of its own with a few products, on a loop of the test's own."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.settings = make_settings(data_dir)
        self.platform = Platform(self.settings, ["catalog"])
        self.loop.run_until_complete(self.platform.start())
        self.app = self.platform.apps["catalog"]
        self.runtime = self.platform.runtimes["catalog"]
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://catalog.internal",
            timeout=30,
        )
        self.token = self.settings.internal_token.get_secret_value()
        self.ids: dict[str, str] = {}
        self.loop.run_until_complete(self._fill())
        self.reserve_route = route_of(self.app, "POST", RESERVATIONS)
        self.commit_route = route_of(self.app, "POST", COMMIT)
        self.numbers = itertools.count()

    async def _fill(self) -> None:
        search = search_for("sqlite")
        for name, currency, variants in [
            ("lamp", "USD", [("25.00", 5, "")]),
            ("shirt", "USD", [("10.00", 3, "Small"), ("12.50", 0, "Large")]),
            ("euro", "EUR", [("8.00", 10, "")]),
            ("plenty", "USD", [("1.00", 1_000_000, "")]),
        ]:
            async with self.runtime.uow() as uow:
                product = await catalog_service.create_product(
                    uow,
                    search,
                    name=name.title(),
                    description="",
                    currency=currency,
                    category=None,
                    slug=None,
                    featured=False,
                    options=[],
                    variants=[
                        catalog_service.VariantSpec(price=price, stock=stock, title=title or None)
                        for price, stock, title in variants
                    ],
                    actor_id=None,
                )
                await uow.commit()
                rows = await catalog_service.variants_of(uow.session, product.id)
            self.ids[name] = str(product.id)
            for index, row in enumerate(rows):
                self.ids[f"{name}.{index}"] = str(row.id)

    def references(self) -> tuple[str, str]:
        """Two fresh references of the same length: the route's, and FastAPI's alone."""
        number = next(self.numbers)
        return f"ra{number:06d}", f"rb{number:06d}"

    def headers(self, auth: str = "good", content_type: str | None = "application/json") -> Any:
        headers = internal_token_headers(self.token, auth)
        if content_type is not None:
            headers.append(("content-type", content_type))
        return headers

    async def statuses(self, token: str) -> list[tuple[str, str]]:
        """The reservations whose reference starts with ``token``, without it."""
        async with self.runtime.database.read_sessions() as session:
            rows = await session.execute(
                select(Reservation.reference, Reservation.status)
                .where(Reservation.reference.startswith(token))
                .order_by(Reservation.reference)
            )
        return [(reference.removeprefix(token), status) for reference, status in rows.all()]

    async def release(self, reference: str) -> None:
        await self.client.post(
            f"{RESERVATIONS}/{quote(reference, safe='')}/release", headers=self.headers()
        )

    async def reserve(self, body: bytes, headers: Any, reference: str) -> tuple[Answer, int]:
        """The route's answer and how often FastAPI's endpoint ran; the stock held, if any,
        is given back before the answer is returned."""
        with endpoint_calls(self.reserve_route) as calls:
            response = await self.client.post(
                RESERVATIONS,
                content=body.replace(REF.encode(), reference.encode()),
                headers=headers,
            )
        for suffix, status in await self.statuses(reference):
            if status == "active":
                await self.release(reference + suffix)
        return Answer.of(response), len(calls)

    async def reserve_both(self, body: bytes, headers: Any) -> tuple[Answer, Answer, int]:
        """What the route answers, what FastAPI's endpoint alone answers (put as the route's
        references and fresh ids are), and how often the endpoint ran for the route."""
        ours, theirs = self.references()
        routed, calls = await self.reserve(body, headers, ours)
        with fastapi_only(self.reserve_route):
            endpoint, _ = await self.reserve(body, headers, theirs)
        assert await self.statuses(ours) == await self.statuses(theirs)
        return routed, as_first(routed, endpoint, {theirs: ours}), calls

    def resolve(self, value: Any) -> Any:
        """A request spec with ``@name`` put as the id of that product or variant."""
        if isinstance(value, str) and value.startswith("@") and value != REF:
            return self.ids.get(value[1:], value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items() if v is not MISSING}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def close(self) -> None:
        stop_on_own_loop(self.loop, self.client, self.platform)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Catalog]:
    yield from on_a_fixed_clock(
        inventory, NOW, lambda: _Catalog(tmp_path_factory.mktemp("internal-direct"))
    )


# What a well-formed line may name: the catalog's products and variants, and one it lacks.
_PRODUCTS = ["@lamp", "@shirt", "@euro", "@plenty", UNKNOWN]
_VARIANTS = ["@lamp.0", "@shirt.0", "@shirt.1", "@euro.0", UNKNOWN]


@st.composite
def _line(draw: st.DrawFn) -> dict[str, Any]:
    named = draw(st.sampled_from(["product", "product", "variant", "both"]))
    line: dict[str, Any] = {}
    if named != "variant":
        line["productId"] = draw(st.sampled_from(_PRODUCTS))
    elif draw(st.booleans()):
        line["productId"] = None
    if named != "product":
        line["variantId"] = draw(st.sampled_from(_VARIANTS))
    line["quantity"] = draw(st.sampled_from([1, 1, 2, 3, 5, 6, "2", 2.0, True]))
    return line


# One thing wrong with a well-formed request, by what it spoils.
_FLAWS: dict[str, list[Any]] = {
    "reference": ["", 12, None, MISSING, REF + "-" + "x" * 92],
    "lines": [[], None, "lines", {}, MISSING, [{"productId": "@plenty", "quantity": 1}] * 101],
    "line": [
        {"quantity": 1},
        {"productId": None, "variantId": None, "quantity": 1},
        {"productId": "nope", "quantity": 1},
        {"productId": 7, "quantity": 1},
        {"productId": "@lamp"},
        {"productId": "@lamp", "quantity": 1, "sku": "X-1"},
        *({"productId": "@lamp", "quantity": bad} for bad in (0, -1, 10_001, 2.5, None, "two")),
        5,
        "line",
        None,
        [],
    ],
    "ttlSeconds": [9, 86_401, 60.5, None, "sixty", "1e2"],
    "note": ["extra"],
}


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request as the saga sends one, or with one thing wrong with it."""
    body: dict[str, Any] = {
        "reference": draw(st.sampled_from([REF, REF, REF + "-" + "x" * 91])),
        "lines": draw(st.lists(_line(), min_size=1, max_size=4)),
        "ttlSeconds": draw(st.sampled_from([MISSING, 10, 900, 86_400, "60", 60.0])),
    }
    flaw = draw(st.sampled_from([*[None] * len(_FLAWS), *_FLAWS]))
    if flaw == "line":
        lines = body["lines"]
        lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(_FLAWS["line"]))
    elif flaw is not None:
        body[flaw] = draw(st.sampled_from(_FLAWS[flaw]))
    return body


def _encode(body: Any, compact: bool, ascii_only: bool, damage: int) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    raw = json.dumps(body, separators=separators, ensure_ascii=ascii_only).encode()
    if damage == 1:
        return raw[: len(raw) // 2]
    if damage == 2:
        return raw + b"}"
    if damage == 3:
        return b"\xef\xbb\xbf" + raw
    if damage == 4:
        return raw.replace(b'"lines"', b'"lines\xff"', 1)
    if damage == 5:
        # The same member twice: the last one counts, for json.loads as for pydantic.
        return raw.replace(b"{", b'{"reference": 5, ', 1)
    return raw


_CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 6
    + ["application/json; charset=utf-8", "application/vnd.panthera+json", "text/plain", None]
)
_AUTH = st.sampled_from(["good"] * 8 + [caller for caller in INTERNAL_CALLERS if caller != "good"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=_bodies(),
    compact=st.booleans(),
    ascii_only=st.booleans(),
    damage=st.sampled_from([0] * 15 + [1, 2, 3, 4, 5]),
    content_type=_CONTENT_TYPES,
    auth=_AUTH,
)
def test_a_reservation_gets_the_same_answer_on_both_paths(
    catalog: _Catalog,
    body: Any,
    compact: bool,
    ascii_only: bool,
    damage: int,
    content_type: str | None,
    auth: str,
) -> None:
    raw = _encode(catalog.resolve(body), compact, ascii_only, damage)
    routed, endpoint, calls = catalog.loop.run_until_complete(
        catalog.reserve_both(raw, catalog.headers(auth, content_type))
    )
    assert routed == endpoint, raw
    # What FastAPI's json.loads and validation read, the direct path reads the same.
    readable = reads_as_fastapi(ReservationIn, raw.replace(REF.encode(), b"ra000000"))
    if auth in ("good", "good-then-wrong") and content_type == "application/json" and readable:
        assert calls == 0, f"{raw!r} was left to FastAPI"


def _request(catalog: _Catalog, *lines: dict[str, Any], ttl: int = 60) -> bytes:
    body = {"reference": REF, "lines": list(lines), "ttlSeconds": ttl}
    return json.dumps(catalog.resolve(body)).encode()


@pytest.mark.parametrize(
    ("lines", "status", "expected"),
    [
        ([{"productId": "@lamp", "quantity": 2}], 200, {"status": "active"}),
        (
            [{"variantId": "@shirt.0", "quantity": 1}, {"productId": "@lamp", "quantity": 5}],
            200,
            {"status": "active"},
        ),
        (
            [{"productId": "@lamp", "quantity": 6}],
            200,
            {"status": "rejected", "reason": "insufficient_stock"},
        ),
        (
            [{"variantId": "@shirt.1", "quantity": 1}],
            200,
            {"status": "rejected", "reason": "insufficient_stock"},
        ),
        (
            [{"productId": UNKNOWN, "quantity": 1}],
            200,
            {"status": "rejected", "reason": "unknown_product"},
        ),
        (
            [{"productId": "@lamp", "quantity": 1}, {"productId": "@euro", "quantity": 1}],
            200,
            {"status": "rejected", "reason": "mixed_currencies"},
        ),
        # Raised by the shared work inside the direct path: a line naming nothing.
        ([{"quantity": 1}], 400, {"code": "invalid_input"}),
    ],
)
def test_the_saga_s_reservations_take_the_direct_path(
    catalog: _Catalog, lines: list[dict[str, Any]], status: int, expected: dict[str, str]
) -> None:
    routed, endpoint, calls = catalog.loop.run_until_complete(
        catalog.reserve_both(_request(catalog, *lines), catalog.headers())
    )
    assert calls == 0, "the request was left to FastAPI"
    assert routed.status == status
    assert expected.items() <= routed.json().items()
    assert routed == endpoint


def test_a_request_the_direct_path_declines_reaches_the_endpoint(catalog: _Catalog) -> None:
    body = _request(catalog, {"productId": "@lamp", "quantity": 1})
    headers = catalog.headers(content_type="application/json; charset=utf-8")
    routed, endpoint, calls = catalog.loop.run_until_complete(catalog.reserve_both(body, headers))
    assert calls == 1
    assert routed.status == 200
    assert routed == endpoint


# ------------------------------------------------------------------------ commit


async def _bring(catalog: _Catalog, reference: str, state: str) -> None:
    """Make ``reference``'s reservation ``state`` through the route as FastAPI serves it."""
    if state == "unknown":
        return
    product = "@plenty" if state != "rejected" else UNKNOWN
    body = {"reference": reference, "lines": [{"productId": product, "quantity": 1}]}
    with fastapi_only(catalog.reserve_route):
        made = await catalog.client.post(
            RESERVATIONS, content=json.dumps(catalog.resolve(body)), headers=catalog.headers()
        )
    assert made.status_code == 200, made.text
    path = quote(reference, safe="")
    if state == "committed":
        done = await catalog.client.post(f"{RESERVATIONS}/{path}/commit", headers=catalog.headers())
        assert done.status_code == 204, done.text
    elif state == "released":
        await catalog.release(reference)


async def _commit_both(
    catalog: _Catalog, state: str, auth: str, suffix: str
) -> tuple[Answer, Answer, int]:
    ours, theirs = (reference + suffix for reference in catalog.references())
    for reference in (ours, theirs):
        await _bring(catalog, reference, state)
    headers = catalog.headers(auth, content_type=None)
    with endpoint_calls(catalog.commit_route) as calls:
        routed = Answer.of(
            await catalog.client.post(
                f"{RESERVATIONS}/{quote(ours, safe='')}/commit", headers=headers
            )
        )
    with fastapi_only(catalog.commit_route):
        endpoint = Answer.of(
            await catalog.client.post(
                f"{RESERVATIONS}/{quote(theirs, safe='')}/commit", headers=headers
            )
        )
    assert await catalog.statuses(ours) == await catalog.statuses(theirs)
    renames = {theirs: ours, quote(theirs, safe=""): quote(ours, safe="")}
    return routed, as_first(routed, endpoint, renames), len(calls)


_COMMITTED = {
    "active": (204, None),
    "committed": (204, None),
    "released": (409, "reservation_closed"),
    "rejected": (409, "reservation_closed"),
    "unknown": (404, "reservation_not_found"),
}


@pytest.mark.parametrize("state", sorted(_COMMITTED))
@pytest.mark.parametrize("auth", INTERNAL_CALLERS)
@pytest.mark.parametrize("suffix", ["", " x", "-é", "%41"])
def test_a_commit_gets_the_same_answer_on_both_paths(
    catalog: _Catalog, state: str, auth: str, suffix: str
) -> None:
    routed, endpoint, calls = catalog.loop.run_until_complete(
        _commit_both(catalog, state, auth, suffix)
    )
    assert routed == endpoint
    if auth in ("good", "good-then-wrong"):
        assert calls == 0, "the commit was left to FastAPI"
        status, code = _COMMITTED[state]
        assert routed.status == status
        if code is not None:
            assert routed.json()["code"] == code
            assert ("content-type", "application/problem+json") in routed.headers
    else:
        assert routed.status == 403


def test_commit_of_an_unknown_reservation_is_raised_inside_the_direct_path(
    catalog: _Catalog,
) -> None:
    ours, _ = catalog.references()
    with endpoint_calls(catalog.commit_route) as calls:
        answer = catalog.loop.run_until_complete(
            catalog.client.post(f"{RESERVATIONS}/{ours}/commit", headers=catalog.headers())
        )
    assert calls == []
    assert answer.status_code == 404
    problem = answer.json()
    assert problem["code"] == "reservation_not_found"
    assert problem["instance"] == f"{RESERVATIONS}/{ours}/commit"
