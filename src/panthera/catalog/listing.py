"""Product list pages, built by the database: one statement, the JSON body ready to send.

A page is the catalog's hottest read. Loading ORM objects and serialising them in
Python cost ten times what the database spends finding the rows, so the listing is
one statement that returns the total, the page's items already as the API's JSON
(the same fields and decimal-string prices as :class:`~panthera.catalog.schemas.
ProductSummary`) and whether the asked-for category exists. The statement is built
from the same filters and search adapter as :func:`panthera.catalog.service.list_products`
and compiled once per shape of query (which filters, which order); the values are
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from panthera.catalog import errors
from panthera.catalog.models import Category, Product
from panthera.catalog.search import SearchIndex
from panthera.catalog.service import ORDERINGS, ProductQuery, listing_conditions, listing_order
from panthera.kernel.db import Database
from panthera.kernel.money import MINOR_UNITS

_TYPES: dict[str, Any] = {
    "min_price": Integer,
    "max_price": Integer,
    "featured": Boolean,
    "category": String,
    "limit": Integer,
    "offset": Integer,
    "media_prefix": String,
}
_SHAPE_FIELDS = ("category", "q", "min_price", "max_price", "featured")

# How the listing's connections plan. Each shape of listing is one prepared statement
# with every value a parameter, so one generic plan serves every request; left to
# choose, PostgreSQL re-plans a page for its values on each execution, and planning
# costs as much as running it. The catalog is small and hot, so its pages are in
# memory: priced as a disk read (the default of 4), a lookup by primary key loses to
# scanning every product, which a search that matches a few dozen products pays
# twice.
_POSTGRES_READER_SETTINGS = (
    "SET plan_cache_mode = force_generic_plan",
    "SET random_page_cost = 1.1",
)


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its JSON array and how many products match in all."""

    body: bytes
    total: int


@dataclass(frozen=True, slots=True)
class _Shape:
    """What decides the statement's text; the values are its parameters."""

    present: frozenset[str]
    in_stock: bool | None
    order: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # The statement's parameters in order, by name; fixed values for the rest.
    names: tuple[str, ...]
    constants: dict[str, Any]


class ProductPages:
    """Answers list pages of active products from one read of the catalog's database."""

    def __init__(self, database: Database, search: SearchIndex, media_prefix: str) -> None:
        self._database = database
        self._search = search
        self._media_prefix = media_prefix
        self._dialect: Dialect = (
            sqlite.pysqlite.dialect() if database.is_sqlite else postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
        )
        self._compile = lru_cache(maxsize=256)(self._compile_shape)
        if not database.is_sqlite:
            for setting in _POSTGRES_READER_SETTINGS:
                database.on_read_connection(setting)

    async def page(self, query: ProductQuery) -> Page:
        """The page ``query`` asks for; an unknown category slug is an error."""
        values: dict[str, Any] = {
            "limit": query.limit,
            "offset": query.offset,
            "media_prefix": self._media_prefix,
        }
        present = set()
        for name in _SHAPE_FIELDS:
            value = getattr(query, name)
            if value is not None:
                present.add(name)
                values[name] = value
        if query.q:
            values["q"] = self._search.argument(query.q)
        else:
            # As in the ORM listing, an empty query searches nothing.
            present.discard("q")
        compiled = self._compile(_Shape(frozenset(present), query.in_stock, listing_order(query)))
        args = [
            values[name] if name in values else compiled.constants[name] for name in compiled.names
        ]
        row = await self._database.read_one(compiled.sql, args)
        assert row is not None  # an aggregate always answers one row
        total, items, category_known = row
        if query.category is not None and not category_known:
            raise errors.UnknownCategory(f"No category has the slug {query.category!r}.")
        return Page(body=items.encode(), total=total)

    def _compile_shape(self, shape: _Shape) -> _Compiled:
        statement = _statement(shape, self._search, postgres=not self._database.is_sqlite)
        compiled = statement.compile(dialect=self._dialect)
        names = tuple(compiled.positiontup or ())
        return _Compiled(sql=compiled.string, names=names, constants=dict(compiled.params))


def _bind(name: str, _value: Any) -> Any:
    return bindparam(name, type_=_TYPES.get(name, String))


def _statement(shape: _Shape, search: SearchIndex, *, postgres: bool) -> Any:
    query = ProductQuery(
        category="" if "category" in shape.present else None,
        q="" if "q" in shape.present else None,
        min_price=0 if "min_price" in shape.present else None,
        max_price=0 if "max_price" in shape.present else None,
        in_stock=shape.in_stock,
        featured=False if "featured" in shape.present else None,
    )
    category_path = None
    category_known: Any = literal(True)
    if query.category is not None:
        by_slug = Category.slug == _bind("category", None)
        category_path = select(Category.path).where(by_slug).scalar_subquery().correlate(None)
        category_known = exists(select(Category.id).where(by_slug)).correlate(None)
    conditions = and_(*listing_conditions(query, category_path, _bind))

    product_columns: list[Any] = [
        Product.id,
        Product.name,
        Product.price_amount,
        Product.currency,
        Product.available,
        Product.slug,
        Product.featured,
        Product.cover_image,
        Product.created_at,
    ]
    ordering: list[Any] = list(ORDERINGS.get(shape.order, ()))
    if query.q is None:
        total = select(func.count()).select_from(Product).where(conditions)
        rows = (
            select(*product_columns, Category.slug.label("category"))
            .outerjoin(Category, Category.id == Product.category_id)
            .where(conditions)
        )
    else:
        # The matching products that pass the filters, joined once and materialised:
        # the total counts them and the page sorts them, without a second join.
        matches = search.matches(None)
        hits = (
            select(*product_columns, Product.category_id, matches.c.rank)
            .join(matches, matches.c.product_id == Product.id)
            .where(conditions)
            .cte("hits")
            .prefix_with("MATERIALIZED")
        )
        total = select(func.count()).select_from(hits)
        rows = select(
            *(hits.c[column.key] for column in product_columns),
            Category.slug.label("category"),
            hits.c.rank,
        ).outerjoin(Category, Category.id == hits.c.category_id)
        if shape.order == "relevance":
            ordering = [hits.c.rank.desc(), hits.c.id]
        else:
            ordering = [_on_page(hits, column) for column in ordering]
    page = (
        rows.order_by(*ordering)
        .limit(_bind("limit", None))
        .offset(_bind("offset", None))
        .subquery("page")
    )
    item = _item_json(page, postgres=postgres)
    if postgres:
        # json_agg keeps no order by itself: the page's order, restated on its columns.
        page_order = [_on_page(page, column) for column in ordering]
        # As text: the driver would otherwise parse the JSON it is only to pass on.
        items: Any = func.coalesce(
            func.json_agg(aggregate_order_by(item, *page_order)), literal_column("'[]'::json")
        ).cast(Text)
    else:
        # SQLite aggregates the rows in the order the ordered, limited subquery yields them.
        items = func.json_group_array(item)
    return select(
        total.scalar_subquery().label("total"),
        select(items).select_from(page).scalar_subquery().label("items"),
        category_known.label("category_known"),
    )


def _on_page(page: Any, column: Any) -> Any:
    """An ordering term of the listing, on a subquery's (or CTE's) columns of the same names."""
    modifier = getattr(column, "modifier", None)
    element = column.element if modifier is not None else column
    name = getattr(element, "key", None) or getattr(element, "name", None)
    on_page = page.c[name]
    if modifier is not None:
        return on_page.desc() if "desc" in modifier.__name__ else on_page.asc()
    return on_page


def aggregate_order_by(item: Any, *order: Any) -> Any:
    return postgresql.aggregate_order_by(item, *order)


def _price_text(amount: str, currency: str, *, postgres: bool) -> ColumnElement[Any]:
    """The exact decimal string of an amount in minor units, with the currency's places."""
    by_places: dict[int, list[str]] = {}
    for code, places in MINOR_UNITS.items():
        by_places.setdefault(places, []).append(code)
    cases = []
    for places in sorted(by_places):
        if places == 2:
            continue
        codes = ", ".join(f"'{code}'" for code in by_places[places])
        cases.append(f"WHEN {currency} IN ({codes}) THEN {_decimal(amount, places, postgres)}")
    default = _decimal(amount, 2, postgres)
    return literal_column(f"CASE {' '.join(cases)} ELSE {default} END")


def _decimal(amount: str, places: int, postgres: bool) -> str:
    if places == 0:
        return f"CAST({amount} AS TEXT)"
    scale = 10**places
    if postgres:
        whole = f"(({amount}) / {scale})::text"
        return f"{whole} || '.' || lpad((({amount}) % {scale})::text, {places}, '0')"
    return f"printf('%d.%0{places}d', ({amount}) / {scale}, ({amount}) % {scale})"


def _item_json(page: Any, *, postgres: bool) -> Any:
    """One list item, ``ProductSummary``'s fields in its order."""
    # NULL, as the API's null, for a product without images.
    image_url = _bind("media_prefix", None) + "/" + page.c.cover_image
    price = _price_text("page.price_amount", "page.currency", postgres=postgres)
    if postgres:
        product_id: Any = page.c.id
        featured: Any = page.c.featured
        build = func.json_build_object
    else:
        # SQLite keeps a UUID as 32 hex digits; the API spells it with hyphens.
        product_id = literal_column(
            "lower(substr(page.id, 1, 8) || '-' || substr(page.id, 9, 4) || '-' || "
            "substr(page.id, 13, 4) || '-' || substr(page.id, 17, 4) || '-' || "
            "substr(page.id, 21, 12))"
        )
        featured = func.json(literal_column("CASE WHEN page.featured THEN 'true' ELSE 'false' END"))
        build = func.json_object
    return build(
        "productId",
        product_id,
        "name",
        page.c.name,
        "price",
        price,
        "stock",
        page.c.available,
        "currency",
        page.c.currency,
        "slug",
        page.c.slug,
        "category",
        page.c.category,
        "imageUrl",
        image_url,
        "featured",
        featured,
    )
