"""Offset paging metadata in headers: ``X-Total-Count`` and an RFC 8288 ``Link``."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlencode

from starlette.requests import Request

FORWARDED_PREFIX_HEADER = "x-forwarded-prefix"
_PAGING = ("offset", "limit")


# A query string made only of these can go into a Link header as the client sent it.
_LINK_SAFE = re.compile(r"[A-Za-z0-9\-._~%+!$'()*,;:@/?=&]*")


def _kept_pairs(query: str) -> list[str]:
    """The query's pairs other than ``offset`` and ``limit``, encoded for a Link header."""
    if not _LINK_SAFE.fullmatch(query):
        return [
            urlencode([pair])
            for pair in parse_qsl(query, keep_blank_values=True)
            if pair[0] not in _PAGING
        ]
    kept = []
    for pair in query.split("&"):
        if not pair:
            continue
        name = pair.partition("=")[0]
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name not in _PAGING:
            kept.append(pair)
    return kept


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
    # Built from the scope rather than through URL.include_query_params: the client's
    # own pairs, without parsing and re-encoding the whole URL on every page.
    prefix = request.headers.get(FORWARDED_PREFIX_HEADER, "")
    # What request.url.path gives, without building the whole URL first.
    path = request.scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    kept = _kept_pairs(request.scope.get("query_string", b"").decode("latin-1"))

    def link(page_offset: int, rel: str) -> str:
        query = "&".join([*kept, f"offset={page_offset}", f"limit={limit}"])
        return f'<{prefix}{path}?{query}>; rel="{rel}"'

    links = []
    if has_next:
        links.append(link(offset + limit, "next"))
    if offset > 0:
        links.append(link(max(0, offset - limit), "prev"))
    headers["Link"] = ", ".join(links)
    return headers
