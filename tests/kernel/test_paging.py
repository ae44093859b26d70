"""Paging links: the request's own query, with offset and limit moved to the end."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from panthera.kernel.http.paging import total_count_headers


def _request(query: bytes, prefix: bytes = b"/api/v1") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/products",
            "query_string": query,
            "headers": [(b"x-forwarded-prefix", prefix)],
        }
    )


def _links(query: bytes, *, total: int = 100, limit: int = 10, offset: int = 20) -> dict[str, str]:
    header = total_count_headers(_request(query), total=total, limit=limit, offset=offset)["Link"]
    found = re.findall(r'<([^<>]*)>; rel="(\w+)"', header)
    assert ", ".join(f'<{target}>; rel="{rel}"' for target, rel in found) == header
    return {rel: target for target, rel in found}


def test_next_and_prev_keep_the_query_and_move_the_page() -> None:
    links = _links(b"q=desk+lamp&offset=20&sort=price&limit=10")
    assert links == {
        "next": "/api/v1/products?q=desk+lamp&sort=price&offset=30&limit=10",
        "prev": "/api/v1/products?q=desk+lamp&sort=price&offset=10&limit=10",
    }


def test_an_escaped_paging_name_is_still_the_paging_parameter() -> None:
    links = _links(b"off%73et=20&q=x")
    assert links["next"] == "/api/v1/products?q=x&offset=30&limit=10"


def test_no_link_on_the_only_page() -> None:
    assert "Link" not in total_count_headers(_request(b""), total=3, limit=10, offset=0)


_TEXT = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=12)


@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["q", "offset", "limit", "sort", "a b", "x"]) | _TEXT, _TEXT),
        max_size=6,
    ),
    raw=st.booleans(),
)
def test_a_link_reads_back_as_the_query_with_the_page_moved(
    pairs: list[tuple[str, str]], raw: bool
) -> None:
    from urllib.parse import urlencode

    # The client's query, either well encoded or as odd raw text.
    query = "&".join(f"{k}={v}" for k, v in pairs) if raw else urlencode(pairs)
    links = _links(query.encode("latin-1"))
    for rel, offset in (("next", 30), ("prev", 10)):
        target = links[rel]
        assert target.startswith("/api/v1/products?")
        assert not set(target) & set('<>" \\')
        expected = [
            pair
            for pair in parse_qsl(query, keep_blank_values=True)
            if pair[0] not in ("offset", "limit")
        ]
        expected += [("offset", str(offset)), ("limit", "10")]
        assert parse_qsl(target.partition("?")[2], keep_blank_values=True) == expected
