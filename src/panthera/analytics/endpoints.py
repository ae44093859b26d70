"""Routes of the analytics service: the shop's reports, for administrators, in JSON or CSV."""

from __future__ import annotations

import csv
import io
import typing
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.analytics import reports
from panthera.analytics.reports import DateRange, Granularity
from panthera.analytics.schemas import (
    CategoriesReport,
    FunnelReport,
    NewUsersReport,
    OrdersByStatusReport,
    SalesReport,
    TopProductsReport,
)
from panthera.kernel.errors import InvalidInput
from panthera.kernel.security.permissions import AdminPrincipal

router = APIRouter(tags=["Reports"])
Responses = dict[int | str, dict[str, Any]]
_RESPONSES: Responses = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    400: {"description": "Invalid range or granularity"},
    401: {"description": "Unauthorized"},
    403: {"description": "Forbidden"},
}
# A report over more than this many days is refused rather than left to run long.
MAX_RANGE_DAYS = 3660
DEFAULT_RANGE_DAYS = 30

From = Annotated[
    date | None, Query(alias="from", description="First day (UTC), included; default 30 days ago.")
]
To = Annotated[date | None, Query(description="Last day (UTC), included; default today.")]
Per = Annotated[Granularity, Query(description="day, week (from Monday) or month.")]


def _range(start: date | None, end: date | None) -> DateRange:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise InvalidInput("'from' must not be after 'to'.", field="from")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInput(f"A report covers at most {MAX_RANGE_DAYS} days.", field="from")
    return DateRange(start, end)


async def _read(request: Request, query: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    # Reports only read: on SQLite they use the read engine, never waiting for a writer.
    async with request.app.state.runtime.database.read_sessions() as session:
        return await query(session)


def _wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "").lower()


def _report_columns(request: Request) -> list[str]:
    """The columns of a report's rows, from its response model: an empty report's CSV
    still starts with its header row."""
    route = request.scope.get("route")
    model = getattr(route, "response_model", None)
    field = getattr(model, "model_fields", {}).get("rows")
    if field is None:
        return []
    (row_model,) = typing.get_args(field.annotation) or (None,)
    return list(getattr(row_model, "model_fields", {}))


def _answer(
    request: Request, name: str, dates: DateRange, rows: list[dict[str, Any]], **extra: Any
) -> Response:
    if _wants_csv(request):
        buffer = io.StringIO()
        columns = list(rows[0]) if rows else _report_columns(request)
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        filename = f"{name}_{dates.start.isoformat()}_{dates.end.isoformat()}.csv"
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    document = {"from": dates.start.isoformat(), "to": dates.end.isoformat(), **extra, "rows": rows}
    return Response(orjson.dumps(document), media_type="application/json")


@router.get(
    "/sales",
    response_model=SalesReport,
    summary="Revenue, orders and average order value per period (Admin only)",
    responses=_RESPONSES,
)
async def sales(
    request: Request,
    _admin: AdminPrincipal,
    start: From = None,
    to: To = None,
    granularity: Per = Granularity.DAY,
) -> Response:
    """Gross (confirmed orders), refunded and net revenue per period and currency."""
    dates = _range(start, to)
    rows = await _read(request, lambda session: reports.sales(session, dates, granularity))
    return _answer(request, "sales", dates, rows, granularity=granularity.value)


@router.get(
    "/orders-by-status",
    response_model=OrdersByStatusReport,
    summary="Orders placed in the range, by their current status (Admin only)",
    responses=_RESPONSES,
)
async def orders_by_status(
    request: Request, _admin: AdminPrincipal, start: From = None, to: To = None
) -> Response:
    """How many of the orders placed in the range are pending, confirmed, cancelled..."""
    dates = _range(start, to)
    rows = await _read(request, lambda session: reports.orders_by_status(session, dates))
    return _answer(request, "orders-by-status", dates, rows)


@router.get(
    "/top-products",
    response_model=TopProductsReport,
    summary="Best-selling products (Admin only)",
    responses=_RESPONSES,
)
async def top_products(
    request: Request,
    _admin: AdminPrincipal,
    start: From = None,
    to: To = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 10,
    by: Literal["revenue", "units"] = "revenue",
) -> Response:
    """Units and revenue of each product in confirmed orders, best first."""
    dates = _range(start, to)
    rows = await _read(
        request, lambda session: reports.top_products(session, dates, limit=limit, by=by)
    )
    return _answer(request, "top-products", dates, rows)


@router.get(
    "/categories",
    response_model=CategoriesReport,
    summary="Units and revenue per category (Admin only)",
    responses=_RESPONSES,
)
async def categories(
    request: Request, _admin: AdminPrincipal, start: From = None, to: To = None
) -> Response:
    """Confirmed orders' lines by the category each product was in when ordered."""
    dates = _range(start, to)
    rows = await _read(request, lambda session: reports.categories(session, dates))
    return _answer(request, "categories", dates, rows)


@router.get(
    "/customers/new-users",
    response_model=NewUsersReport,
    summary="New accounts per period (Admin only)",
    responses=_RESPONSES,
)
async def new_users(
    request: Request,
    _admin: AdminPrincipal,
    start: From = None,
    to: To = None,
    granularity: Per = Granularity.DAY,
) -> Response:
    """Registrations per period."""
    dates = _range(start, to)
    rows = await _read(request, lambda session: reports.new_users(session, dates, granularity))
    return _answer(request, "new-users", dates, rows, granularity=granularity.value)


@router.get(
    "/funnel",
    response_model=FunnelReport,
    summary="From product views to orders to confirmed payments (Admin only)",
    responses=_RESPONSES,
)
async def funnel(
    request: Request, _admin: AdminPrincipal, start: From = None, to: To = None
) -> Response:
    """Each stage's count in the range and its conversion from the stage before."""
    dates = _range(start, to)
    rows = await _read(request, lambda session: reports.funnel(session, dates))
    return _answer(request, "funnel", dates, rows)
