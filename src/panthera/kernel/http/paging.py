"""Offset paging metadata in headers: ``X-Total-Count`` and an RFC 8288 ``Link``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request

FORWARDED_PREFIX_HEADER = "x-forwarded-prefix"


def total_count_headers(request: Request, *, total: int, limit: int, offset: int) -> dict[str, str]:
    """``X-Total-Count`` plus ``Link`` with ``next``/``prev`` where those pages exist.

    Each link is the request's own URL with ``offset`` and ``limit`` moved to the
    end and set to the page's: a relative reference with the gateway's public
    prefix, right for the caller whether it called the gateway or the service itself.
    """
    headers = {"X-Total-Count": str(total)}
    has_next = offset + limit < total
    if not has_next and offset <= 0:
        return headers
    # Built from the scope rather than through URL.include_query_params: the same
    # text, without parsing and re-building the whole URL twice on every page.
    prefix = request.headers.get(FORWARDED_PREFIX_HEADER, "")
    # What request.url.path gives, without building the whole URL first.
    path = request.scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    kept = [
        pair
        for pair in parse_qsl(
            request.scope.get("query_string", b"").decode(), keep_blank_values=True
        )
        if pair[0] not in ("offset", "limit")
    ]

    def link(page_offset: int, rel: str) -> str:
        query = urlencode([*kept, ("offset", str(page_offset)), ("limit", str(limit))])
        return f'<{prefix}{path}?{query}>; rel="{rel}"'

    links = []
    if has_next:
        links.append(link(offset + limit, "next"))
    if offset > 0:
        links.append(link(max(0, offset - limit), "prev"))
    headers["Link"] = ", ".join(links)
    return headers
