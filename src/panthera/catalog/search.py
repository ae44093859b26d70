"""Full-text search over products: SQLite FTS5 embedded, PostgreSQL tsvector + pg_trgm distributed.

Both keep a ``product_search`` document per active product, written in the same
transaction as the product, and answer ``matches(q)``: a subquery of
``(product_id, rank)`` that the listing joins and combines with every filter.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol

from sqlalchemy import Subquery, column, literal_column, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog.models import Category, Product

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

    def matches(self, query: str) -> Subquery:
        """``(product_id, rank)`` of the products matching ``query``; higher rank first."""


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

    def matches(self, query: str) -> Subquery:
        terms = search_terms(query)
        # Each word as a quoted prefix: user input never reaches FTS5 as syntax.
        expression = " ".join(f'"{term}"*' for term in terms) or '""'
        return (
            select(
                literal_column("product_id").label("product_id"),
                literal_column("-bm25(product_search, 0, 10.0, 1.0, 4.0)").label("rank"),
            )
            .select_from(_search_table)
            .where(literal_column("product_search").op("MATCH")(expression))
            .subquery("matches")
        )


class PostgresSearch:
    """``websearch_to_tsquery`` ranked with ``ts_rank_cd``, plus trigram similarity for typos."""

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

    def matches(self, query: str) -> Subquery:
        phrase = " ".join(search_terms(query))
        # Fixed SQL; the shopper's words are a bound parameter.
        statement: Any = text(
            "SELECT product_id, "
            "ts_rank_cd(document, websearch_to_tsquery('english', :q)) * 2"
            " + similarity(name, :q) AS rank "
            "FROM product_search "
            "WHERE document @@ websearch_to_tsquery('english', :q)"
            " OR name % :q OR word_similarity(:q, name) > 0.5"
        ).bindparams(q=phrase)
        matches: Subquery = statement.columns(column("product_id"), column("rank")).subquery(
            "matches"
        )
        return matches


def search_for(dialect: str) -> SearchIndex:
    """The search adapter for a database dialect."""
    return SqliteSearch() if dialect == "sqlite" else PostgresSearch()
