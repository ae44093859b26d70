"""Product search on PostgreSQL (tsvector ranking + pg_trgm typos), and SQLite FTS5 beside it.

Both adapters answer the same ``SearchIndex`` interface; the listing combines their
matches with every filter. The same shop is seeded into both databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from panthera.catalog import service
from panthera.catalog.search import PostgresSearch, SearchIndex, SqliteSearch, search_for
from panthera.kernel.service import ServiceRuntime
from tests.catalog.conftest import create_product, fresh_pg_catalog, fresh_sqlite_catalog

# One event loop for the module, so the seeded databases are shared by its tests.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

# name, description, category, price, stock
SHOP = [
    ("Chef Knife", "Forged steel blade for the kitchen", "knives", "80.00", 3),
    ("Paring Knife", "Small blade for fruit", "knives", "12.00", 5),
    ("Knife Sharpener", "Keeps any blade keen", "kitchen", "15.00", 0),
    ("Cutting Board", "Oak board, kind to every knife edge", "kitchen", "35.00", 4),
    ("Garden Hose", "Twenty metres, not a knife in sight", "garden", "30.00", 9),
    ("Watering Can", "Galvanised steel", "garden", "22.00", 2),
]


def _search(runtime: ServiceRuntime) -> SearchIndex:
    return search_for("sqlite" if runtime.database.is_sqlite else "postgresql")


async def _seed(runtime: ServiceRuntime) -> None:
    async with runtime.uow() as uow:
        for name, parent in (("Kitchen", None), ("Knives", "kitchen"), ("Garden", None)):
            await service.create_category(
                uow, name=name, slug=None, description="", parent=parent, position=0
            )
        await uow.commit()
    for name, description, category, price, stock in SHOP:
        await create_product(
            runtime,
            name=name,
            description=description,
            category=category,
            variants=[(price, stock)],
        )


async def _names(runtime: ServiceRuntime, **query: object) -> list[str]:
    async with runtime.database.read_sessions() as session:
        rows, total = await service.list_products(
            session,
            _search(runtime),
            service.ProductQuery(**query),  # type: ignore[arg-type]
        )
    assert total == len(rows)
    return [product.name for product, _ in rows]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shops(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime]]:
    """The seeded shop on PostgreSQL and on SQLite, shared by the module's tests (which
    leave the seeded products as they found them)."""
    async with (
        fresh_pg_catalog(tmp_path_factory.mktemp("pg")) as pg,
        fresh_sqlite_catalog(tmp_path_factory.mktemp("sqlite")) as sqlite,
    ):
        await _seed(pg)
        await _seed(sqlite)
        yield pg, sqlite


async def test_each_database_gets_its_adapter() -> None:
    assert isinstance(search_for("postgresql"), PostgresSearch)
    assert isinstance(search_for("sqlite"), SqliteSearch)


async def test_postgres_ranks_name_matches_above_description_matches(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    pg, _ = shops
    names = await _names(pg, q="knife")
    assert set(names[:3]) == {"Chef Knife", "Paring Knife", "Knife Sharpener"}
    assert set(names[3:]) <= {"Cutting Board", "Garden Hose"}
    assert "Cutting Board" in names
    assert "Garden Hose" in names
    assert "Watering Can" not in names
    # English stemming: "blades" finds "blade".
    assert set(await _names(pg, q="blades")) == {"Chef Knife", "Paring Knife", "Knife Sharpener"}
    # A category's words find its products (weighted between name and description).
    assert set(await _names(pg, q="knives")) >= {"Chef Knife", "Paring Knife"}
    # The category's words are searchable too.
    assert set(await _names(pg, q="garden")) >= {"Garden Hose", "Watering Can"}


async def test_postgres_search_combines_with_filters(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    pg, _ = shops
    # Category subtree: "kitchen" includes "knives".
    assert set(await _names(pg, q="knife", category="kitchen")) == {
        "Chef Knife",
        "Paring Knife",
        "Knife Sharpener",
        "Cutting Board",
    }
    assert set(await _names(pg, q="knife", category="knives")) == {"Chef Knife", "Paring Knife"}
    assert set(await _names(pg, q="knife", category="kitchen", in_stock=True)) == {
        "Chef Knife",
        "Paring Knife",
        "Cutting Board",
    }
    assert set(await _names(pg, q="knife", min_price=1000, max_price=2000)) == {
        "Paring Knife",
        "Knife Sharpener",
    }
    assert await _names(
        pg, q="knife", category="kitchen", in_stock=True, min_price=2000, max_price=5000
    ) == ["Cutting Board"]
    assert await _names(pg, q="steel", sort="price") == ["Watering Can", "Chef Knife"]
    # Paging keeps the relevance order and the full total.
    async with pg.database.read_sessions() as session:
        rows, total = await service.list_products(
            session, _search(pg), service.ProductQuery(q="knife", limit=2)
        )
    assert total == 5
    assert len(rows) == 2


async def test_postgres_forgives_typos(shops: tuple[ServiceRuntime, ServiceRuntime]) -> None:
    pg, _ = shops
    assert (await _names(pg, q="sharpner"))[0] == "Knife Sharpener"
    assert (await _names(pg, q="chef knfe"))[0] == "Chef Knife"
    assert (await _names(pg, q="gardn hose"))[0] == "Garden Hose"
    assert (await _names(pg, q="watring can"))[0] == "Watering Can"
    assert await _names(pg, q="zzzzqqq") == []
    # Typos combine with filters like any other match.
    assert await _names(pg, q="sharpner", in_stock=True) == []
    assert await _names(pg, q="gardn hose", category="garden", max_price=3000) == ["Garden Hose"]


async def test_hostile_input_is_just_words(shops: tuple[ServiceRuntime, ServiceRuntime]) -> None:
    for runtime in shops:
        plain = await _names(runtime, q="knife")
        # Quotes, operators and wildcards are not syntax: only the words count.
        for q in ('knife"*', "knife & | ! :* (", '-"knife" ^ (*)'):
            assert await _names(runtime, q=q) == plain, q
        assert await _names(runtime, q="%_*") == []
        await _names(runtime, q="knife'); DROP TABLE products; --")
        assert await _names(runtime, q="knife") == plain  # nothing was dropped


@pytest.mark.parametrize(
    ("q", "top"),
    [
        ("sharpener", "Knife Sharpener"),
        ("chef knife", "Chef Knife"),
        ("hose", "Garden Hose"),
        ("watering can", "Watering Can"),
        ("oak board", "Cutting Board"),
        ("paring", "Paring Knife"),
    ],
)
async def test_both_adapters_agree_on_the_top_result_for_exact_words(
    shops: tuple[ServiceRuntime, ServiceRuntime], q: str, top: str
) -> None:
    pg, sqlite = shops
    assert (await _names(pg, q=q))[0] == top
    assert (await _names(sqlite, q=q))[0] == top


async def test_archived_and_renamed_products_are_reindexed(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    for runtime in shops:
        teapot, _ = await create_product(runtime, name="Old Teapot", description="Cracked lid")
        kettle, _ = await create_product(runtime, name="Copper Kettle", description="Whistles")
        assert await _names(runtime, q="teapot") == ["Old Teapot"]
        async with runtime.uow() as uow:
            await service.archive_product(uow, _search(runtime), teapot)
            await uow.commit()
        assert await _names(runtime, q="teapot") == []
        assert await _names(runtime, q="cracked lid") == []
        # Renaming rewrites the document in the same transaction.
        async with runtime.uow() as uow:
            await service.update_product(uow, _search(runtime), kettle, {"name": "Copper Jug"})
            await uow.commit()
        assert await _names(runtime, q="kettle") == []
        assert await _names(runtime, q="copper jug") == ["Copper Jug"]
        # Leave the shared shop as it was.
        async with runtime.uow() as uow:
            await service.archive_product(uow, _search(runtime), kettle)
            await uow.commit()


async def _sqlite_index_rows(runtime: ServiceRuntime) -> int:
    async with runtime.database.engine.connect() as conn:
        found = await conn.exec_driver_sql("SELECT count(*) FROM product_search_data")
        rows: int = found.scalar_one()
    return rows


async def test_compacting_merges_the_index_and_keeps_every_answer(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    _, sqlite = shops
    queries = ("knife", "blade", "garden", "oak board", "chef knfe", "zzzzqqq")
    # Each product was written in a transaction of its own: a segment each.
    segmented = await _sqlite_index_rows(sqlite)
    for runtime in shops:
        before = {q: await _names(runtime, q=q) for q in queries}
        await _search(runtime).compact(runtime.database)
        assert {q: await _names(runtime, q=q) for q in queries} == before
    assert await _sqlite_index_rows(sqlite) < segmented
