"""List pages built by the database answer exactly what the ORM listing and presenters do.

The same shop (currencies with 0, 2 and 3 decimal places, featured products,
images with and without a medium size, nested categories) is seeded into SQLite
and PostgreSQL; every shape of query is asked both ways and the bodies compared.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from panthera.catalog import errors, presenters, service
from panthera.catalog.listing import ProductPages
from panthera.catalog.schemas import ProductSummary
from panthera.catalog.search import SearchIndex, search_for
from panthera.kernel.service import ServiceRuntime
from tests.catalog.conftest import create_product, fresh_pg_catalog, fresh_sqlite_catalog

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

MEDIA = "/media"
NO_MEDIUM = {"medium": "", "original": "c/o.webp"}
# name, description, category, currency, price, stock, featured, image keys
SHOP = [
    ("Chef Knife", "Forged steel blade", "knives", "USD", "80.00", 3, True, {"medium": "a/m.webp"}),
    ("Paring Knife", "Small blade", "knives", "USD", "12.05", 5, False, {"original": "b/o.webp"}),
    ("Knife Sharpener", "Keeps any blade keen", "kitchen", "JPY", "1500", 0, False, None),
    ("Cutting Board", "Oak, kind to a knife", "kitchen", "BHD", "3.005", 4, True, None),
    ("Garden Hose", "Twenty metres", "garden", "USD", "30.00", 9, False, NO_MEDIUM),
    ("Watering Can", "Galvanised steel", None, "EUR", "0.99", 2, False, None),
    ("Ünïcode \"Quote\" Mug", "Tea", "kitchen", "USD", "7.50", 1, False, None),
]  # fmt: skip


def _runtime_search(runtime: ServiceRuntime) -> tuple[ProductPages, SearchIndex]:
    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    search.configure(runtime.database)
    return ProductPages(runtime.database, search, MEDIA), search


async def _seed(runtime: ServiceRuntime) -> None:
    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    async with runtime.uow() as uow:
        for name, parent in (("Kitchen", None), ("Knives", "kitchen"), ("Garden", None)):
            await service.create_category(
                uow, name=name, slug=None, description="", parent=parent, position=0
            )
        await uow.commit()
    for name, description, category, currency, price, stock, featured, keys in SHOP:
        async with runtime.uow() as uow:
            product = await service.create_product(
                uow,
                search,
                name=name,
                description=description,
                currency=currency,
                category=category,
                slug=None,
                featured=featured,
                options=[],
                variants=[service.VariantSpec(price=price, stock=stock)],
                actor_id=None,
            )
            if keys is not None:
                # The first image added is the cover; the second never shows in lists.
                for alt, image_keys in (("first", keys), ("second", {"original": "late.webp"})):
                    await service.add_image(
                        uow,
                        product.id,
                        image_id=uuid.uuid4(),
                        keys=image_keys,
                        width=10,
                        height=10,
                        alt=alt,
                        announce=False,
                    )
            await uow.commit()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shops(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime]]:
    async with (
        fresh_pg_catalog(tmp_path_factory.mktemp("pg")) as pg,
        fresh_sqlite_catalog(tmp_path_factory.mktemp("sqlite")) as sqlite,
    ):
        await _seed(pg)
        await _seed(sqlite)
        yield pg, sqlite


async def _expected(
    runtime: ServiceRuntime, query: service.ProductQuery
) -> tuple[list[dict[str, Any]], int]:
    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    async with runtime.database.read_sessions() as session:
        rows, total = await service.list_products(session, search, query)
        images = await service.first_images(session, [product.id for product, _ in rows])
    body = [
        presenters.summary(product, slug, images.get(product.id), MEDIA).model_dump(mode="json")
        for product, slug in rows
    ]
    return body, total


QUERIES = [
    {},
    {"limit": 2},
    {"limit": 2, "offset": 2},
    {"offset": 50},
    {"sort": "price"},
    {"sort": "-price"},
    {"sort": "name"},
    {"sort": "-name"},
    {"sort": "oldest"},
    {"sort": "relevance"},
    {"category": "kitchen"},
    {"category": "knives", "sort": "name"},
    {"in_stock": True},
    {"in_stock": False},
    {"featured": True},
    {"featured": False, "sort": "name"},
    {"min_price": 1000, "max_price": 5000},
    {"q": "knife"},
    {"q": "blade", "sort": "price"},
    {"q": "knife", "category": "kitchen", "in_stock": True},
    {"q": "knife", "limit": 1, "offset": 1},
    {"q": "mug"},
    {"q": "zzzzqqq"},
]


@pytest.mark.parametrize("query", QUERIES, ids=[repr(q) for q in QUERIES])
async def test_pages_match_the_orm_listing(
    shops: tuple[ServiceRuntime, ServiceRuntime], query: dict[str, object]
) -> None:
    for runtime in shops:
        pages, _ = _runtime_search(runtime)
        product_query = service.ProductQuery(**query)  # type: ignore[arg-type]
        page = await pages.page(product_query)
        expected, total = await _expected(runtime, product_query)
        body = orjson.loads(page.body)
        assert body == expected, runtime.database.url
        assert page.total == total
        for item in body:
            ProductSummary.model_validate(item)


async def test_prices_and_images_are_spelled_like_the_api(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    for runtime in shops:
        pages, _ = _runtime_search(runtime)
        body = orjson.loads((await pages.page(service.ProductQuery(sort="name"))).body)
        by_name = {item["name"]: item for item in body}
        assert by_name["Knife Sharpener"]["price"] == "1500"
        assert by_name["Cutting Board"]["price"] == "3.005"
        assert by_name["Paring Knife"]["price"] == "12.05"
        assert by_name["Watering Can"]["price"] == "0.99"
        assert by_name["Chef Knife"]["imageUrl"] == "/media/a/m.webp"
        assert by_name["Garden Hose"]["imageUrl"] == "/media/c/o.webp"
        assert by_name["Watering Can"]["imageUrl"] is None
        assert by_name["Chef Knife"]["featured"] is True
        assert by_name['Ünïcode "Quote" Mug']["category"] == "kitchen"


async def test_an_unknown_category_is_an_error(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    for runtime in shops:
        pages, _ = _runtime_search(runtime)
        with pytest.raises(errors.UnknownCategory):
            await pages.page(service.ProductQuery(category="no-such-thing"))


async def test_removing_the_cover_image_shows_the_next_one(
    shops: tuple[ServiceRuntime, ServiceRuntime],
) -> None:
    for runtime in shops:
        pages, search = _runtime_search(runtime)
        product_id, _ = await create_product(runtime, name="Zz Cover Test")
        async with runtime.uow() as uow:
            images = [
                await service.add_image(
                    uow,
                    product_id,
                    image_id=uuid.uuid4(),
                    keys={"original": f"z/{n}.webp", "medium": f"z/{n}m.webp"},
                    width=10,
                    height=10,
                    alt=str(n),
                )
                for n in range(3)
            ]
            await uow.commit()

        async def cover(pages: ProductPages = pages, runtime: ServiceRuntime = runtime) -> object:
            query = service.ProductQuery(sort="newest", limit=1)
            (item,) = orjson.loads((await pages.page(query)).body)
            assert item["name"] == "Zz Cover Test"
            expected, _ = await _expected(runtime, query)
            assert [item] == expected
            return item["imageUrl"]

        assert await cover() == "/media/z/0m.webp"
        for removed, now in ((images[1], "/media/z/0m.webp"), (images[0], "/media/z/2m.webp")):
            async with runtime.uow() as uow:
                await service.remove_image(uow, product_id, removed.id)
                await uow.commit()
            assert await cover() == now
        async with runtime.uow() as uow:
            await service.remove_image(uow, product_id, images[2].id)
            await uow.commit()
        assert await cover() is None
        async with runtime.uow() as uow:
            await service.archive_product(uow, search, product_id)
            await uow.commit()
