"""Full-text search over products: SQLite FTS5 embedded, PostgreSQL tsvector + pg_trgm distributed.

Both keep a ``product_search`` document per active product, written in the same
transaction as the product, and answer ``matches(argument(q))``: a subquery of
``(product_id, rank)`` that the listing joins and combines with every filter. The
shopper's words reach the database only as the bound parameter ``q``, whose value
``argument(q)`` prepares, so one compiled statement serves every query.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol

from sqlalchemy import (
    String,
    Subquery,
    bindparam,
    column,
    event,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog.models import Category, Product
from panthera.kernel.db import Database

_WORD = re.compile(r"\w+", re.UNICODE)
_search_table = table(
    "product_search",
    column("product_id"),
    column("name"),
    column("description"),
    column("category"),
)


def search_terms(query: str) -> list[str]:
    """The words of a shopper's query, lower-cased, at most 12 of them."""
    return [word.lower() for word in _WORD.findall(query)][:12]


class SearchIndex(Protocol):
    async def index(
        self, session: AsyncSession, product: Product, category: Category | None
    ) -> None:
        """Write (or rewrite) a product's search document."""

    async def remove(self, session: AsyncSession, product_id: uuid.UUID) -> None:
        """Forget a product."""

    def argument(self, query: str) -> str:
        """The value of the parameter ``q`` of :meth:`matches` for a shopper's query."""

    def matches(self, argument: str | None) -> Subquery:
        """``(product_id, rank)`` of the products matching ``argument``; higher rank first.

        ``argument`` is bound as the parameter ``q``; ``None`` leaves it to be given
        when the statement runs.
        """

    def configure(self, database: Database) -> None:
        """Prepare the database's connections for searching."""

    async def compact(self, database: Database) -> None:
        """Bring the index into its most compact form after a bulk load."""


def _category_text(category: Category | None) -> str:
    if category is None:
        return ""
    # "/home/kitchen/" also finds kitchen products for "home".
    return (
        " ".join(part.replace("-", " ") for part in category.path.strip("/").split("/"))
        + " "
        + category.name
    )


class SqliteSearch:
    """FTS5 with BM25 ranking: name weighs most, then category, then description."""

    async def index(
        self, session: AsyncSession, product: Product, category: Category | None
    ) -> None:
        await self.remove(session, product.id)
        await session.execute(
            text(
                "INSERT INTO product_search (product_id, name, description, category) "
                "VALUES (:product_id, :name, :description, :category)"
            ),
            {
                "product_id": product.id.hex,
                "name": product.name,
                "description": product.description,
                "category": _category_text(category),
            },
        )

    async def remove(self, session: AsyncSession, product_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM product_search WHERE product_id = :product_id"),
            {"product_id": product_id.hex},
        )

    def argument(self, query: str) -> str:
        # Each word as a quoted prefix: user input never reaches FTS5 as syntax.
        return " ".join(f'"{term}"*' for term in search_terms(query)) or '""'

    def matches(self, argument: str | None) -> Subquery:
        return (
            select(
                literal_column("product_id").label("product_id"),
                literal_column("-bm25(product_search, 0, 10.0, 1.0, 4.0)").label("rank"),
            )
            .select_from(_search_table)
            .where(
                literal_column("product_search").op("MATCH")(bindparam("q", argument, type_=String))
            )
            .subquery("matches")
        )

    def configure(self, database: Database) -> None:
        """FTS5 needs nothing set per connection."""

    async def compact(self, database: Database) -> None:
        """Merge the index's segments into one.

        FTS5 writes each transaction's documents as a segment of their own and merges
        them only now and then: after a seed of a thousand products a search reads
        dozens of segments, a third more work than reading one.
        """
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO product_search (product_search) VALUES ('optimize')"
            )


# How alike a query must be to a run of words in a name (``<%``) to count as a typo
# of it; pg_trgm's default, 0.6, misses two-letter slips in short words.
WORD_SIMILARITY_THRESHOLD = 0.5

# Full text first, through its GIN index. Only when it finds nothing anywhere
# (the NOT EXISTS runs once, as an init plan) do the trigram operators look for
# typos, through the name's trigram GIN index: ``word_similarity(...) > x``
# would compute the similarity of every name on every search. The two ranks never
# meet in one answer. Words found are ranked by the document alone: its weights
# already put the name first, and a trigram similarity of each hit's name to the
# query cost more than the rest of the search.
_POSTGRES_MATCHES = (
    "SELECT product_id, ts_rank_cd(document, query) AS rank "
    "FROM product_search, websearch_to_tsquery('english', :q) AS query "
    "WHERE document @@ query "
    "UNION ALL "
    "SELECT product_id, similarity(name, :q) AS rank "
    "FROM product_search "
    "WHERE (name % :q OR :q <% name) "
    "AND NOT EXISTS (SELECT FROM product_search "
    "WHERE document @@ websearch_to_tsquery('english', :q))"
)


class PostgresSearch:
    """``websearch_to_tsquery`` ranked with ``ts_rank_cd``; trigram similarity for typos
    when the words themselves find nothing."""

    async def index(
        self, session: AsyncSession, product: Product, category: Category | None
    ) -> None:
        await session.execute(
            text(
                "INSERT INTO product_search (product_id, name, description, category) "
                "VALUES (:product_id, :name, :description, :category) "
                "ON CONFLICT (product_id) DO UPDATE SET name = EXCLUDED.name, "
                "description = EXCLUDED.description, category = EXCLUDED.category"
            ),
            {
                "product_id": product.id,
                "name": product.name,
                "description": product.description,
                "category": _category_text(category),
            },
        )

    async def remove(self, session: AsyncSession, product_id: uuid.UUID) -> None:
        await session.execute(
            text("DELETE FROM product_search WHERE product_id = :product_id"),
            {"product_id": product_id},
        )

    def argument(self, query: str) -> str:
        return " ".join(search_terms(query))

    def matches(self, argument: str | None) -> Subquery:
        # Fixed SQL; the shopper's words are a bound parameter.
        statement: Any = text(_POSTGRES_MATCHES).bindparams(bindparam("q", argument, type_=String))
        matches: Subquery = statement.columns(column("product_id"), column("rank")).subquery(
            "matches"
        )
        return matches

    def configure(self, database: Database) -> None:
        """Set the typo threshold on every connection, once, not on every search."""
        setting = f"SET pg_trgm.word_similarity_threshold = {WORD_SIMILARITY_THRESHOLD}"

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(setting)
            cursor.close()

        for engine in {database.engine, database.read_engine}:
            event.listen(engine.sync_engine, "connect", on_connect)
        database.on_read_connection(setting)

    async def compact(self, database: Database) -> None:
        """Nothing beyond :meth:`Database.refresh_statistics`: its VACUUM also moves the
        GIN index's pending entries into the index proper."""


def search_for(dialect: str) -> SearchIndex:
    """The search adapter for a database dialect."""
    return SqliteSearch() if dialect == "sqlite" else PostgresSearch()
