"""Offset paging metadata in headers: ``X-Total-Count`` and an RFC 8288 ``Link``."""

from __future__ import annotations

from starlette.requests import Request

FORWARDED_PREFIX_HEADER = "x-forwarded-prefix"


def _page_link(request: Request, *, offset: int, limit: int, rel: str) -> str:
    # A relative reference with the gateway's public prefix: right for the caller
    # whether it called the gateway or the service itself.
    prefix = request.headers.get(FORWARDED_PREFIX_HEADER, "")
    url = request.url.include_query_params(offset=offset, limit=limit)
    return f'<{prefix}{url.path}?{url.query}>; rel="{rel}"'


def total_count_headers(request: Request, *, total: int, limit: int, offset: int) -> dict[str, str]:
    """``X-Total-Count`` plus ``Link`` with ``next``/``prev`` where those pages exist."""
    links = []
    if offset + limit < total:
        links.append(_page_link(request, offset=offset + limit, limit=limit, rel="next"))
    if offset > 0:
        links.append(_page_link(request, offset=max(0, offset - limit), limit=limit, rel="prev"))
    headers = {"X-Total-Count": str(total)}
    if links:
        headers["Link"] = ", ".join(links)
    return headers
