"""``panthera seed``: a demo catalog with categories, variants, stock and pictures, once."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest
from PIL import Image
from typer.testing import CliRunner

from panthera.catalog import demo
from panthera.cli import app as cli
from panthera.cli import seed_demo
from panthera.kernel.settings import get_settings
from panthera.runtime.registry import SERVICE_NAMES
from tests.conftest import make_settings, start_platform
from tests.integration.conftest import (
    DATABASE_URL,
    PostgresServer,
    ServiceDatabases,
    unique_prefix,
)

CATEGORIES = len(demo.DEPARTMENTS) + sum(len(d.aisles) for d in demo.DEPARTMENTS)


def test_the_plan_is_varied_and_stable() -> None:
    plans = list(demo.plans(1000))
    assert len({plan.slug for plan in plans}) == 1000
    assert len({plan.name for plan in plans}) == 1000
    skus = [variant.sku for plan in plans for variant in plan.variants]
    assert len(set(skus)) == len(skus)
    assert len(demo.DEPARTMENTS) >= 6
    assert all(3 <= len(d.aisles) <= 4 for d in demo.DEPARTMENTS)
    with_sizes = [p for p in plans if any(o["name"] == "Size" for o in p.options)]
    with_colours = [p for p in plans if any(o["name"] == "Color" for o in p.options)]
    assert len(with_sizes) > 100
    assert len(with_colours) > 100
    assert 20 < sum(plan.featured for plan in plans) < 150
    sold_out = [p for p in plans if all(v.stock == 0 for v in p.variants)]
    assert 50 < len(sold_out) < 300
    # The first products do not depend on how many are asked for.
    assert list(demo.plans(40)) == plans[:40]


async def test_seed_makes_a_browsable_catalog_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first, seconds = await seed_demo(settings, 120)
    assert first.categories_created == CATEGORIES
    assert first.products_created == 120
    assert first.images_created == 120
    assert first.products_skipped == 0
    assert seconds > 0

    again, _ = await seed_demo(settings, 120)
    assert (again.categories_created, again.products_created, again.images_created) == (0, 0, 0)
    assert again.products_skipped == 120

    more, _ = await seed_demo(settings, 150)
    assert (more.products_created, more.products_skipped) == (30, 120)

    app, client = await start_platform(settings)
    try:
        deps = app.state.platform.apps["catalog"].state.catalog_deps
        assert await demo.counts(deps) == {"products": 150, "images": 150}

        tree = (await client.get("/api/v1/categories")).json()
        assert len(tree) == len(demo.DEPARTMENTS)
        assert all(3 <= len(node["children"]) <= 4 for node in tree)

        listing = await client.get("/api/v1/products", params={"limit": 100})
        assert listing.headers["X-Total-Count"] == "150"
        products = listing.json()
        assert all(product["imageUrl"] for product in products)
        assert any(product["stock"] == 0 for product in products)
        assert any(product["featured"] for product in products)
        clothing = await client.get("/api/v1/products", params={"category": "clothing"})
        assert int(clothing.headers["X-Total-Count"]) > 0

        shirt = next(p for p in products if p["category"] == "t-shirts")
        detail = (await client.get(f"/api/v1/products/{shirt['productId']}")).json()
        assert detail["categoryPath"] == ["clothing", "t-shirts"]
        assert detail["options"][0]["name"] == "Size"
        assert len(detail["variants"]) in {4, 8}
        assert detail["stock"] == sum(v["stock"] for v in detail["variants"])
        (image,) = detail["images"]
        assert image["alt"] == detail["name"]
        thumb = await client.get(image["urls"]["thumb"])
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as picture:
            assert picture.format == "WEBP"
            assert max(picture.size) == 200
        medium = await client.get(detail["imageUrl"])
        assert medium.status_code == 200

        found = await client.get("/api/v1/products", params={"q": shirt["name"]})
        assert shirt["productId"] in [p["productId"] for p in found.json()]
    finally:
        await client.aclose()
        await app.state.platform.stop()


def test_the_seed_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The command sets PANTHERA_DATA_DIR from --data-dir: monkeypatch puts it back after.
    monkeypatch.setenv("PANTHERA_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("PANTHERA_ENVIRONMENT", "test")
    monkeypatch.setenv("PANTHERA_LOG_JSON", "false")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, ["seed", "--data-dir", str(tmp_path / "shop"), "--products", "5"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "products: 5 created, 0 already there" in result.output
    assert "seeded in" in result.output
    assert (tmp_path / "shop" / "catalog.sqlite3").exists()
    assert len(list((tmp_path / "shop" / "media" / "products").rglob("thumb.webp"))) == 5


@pytest.mark.integration
async def test_seed_on_the_distributed_shapes_databases(tmp_path: Path) -> None:
    """With PANTHERA_DATABASE_URL set, the seed fills PostgreSQL the same way, once."""
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), unique_prefix())
    try:
        await databases.create(SERVICE_NAMES)
        settings = make_settings(tmp_path, database_url=databases.url_template)
        first, _ = await seed_demo(settings, 40)
        assert (first.categories_created, first.products_created) == (CATEGORIES, 40)
        # The planner has the loaded tables' statistics at once, not when autovacuum
        # gets round to them.
        connection = await asyncpg.connect(
            databases.url_for("catalog").replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            analysed = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN "
                "('products', 'product_search') AND last_analyze IS NOT NULL"
            )
        finally:
            await connection.close()
        assert analysed == 2
        again, _ = await seed_demo(settings, 40)
        assert (again.categories_created, again.products_created) == (0, 0)
        assert not (tmp_path / "catalog.sqlite3").exists()
        app, client = await start_platform(settings)
        try:
            deps = app.state.platform.apps["catalog"].state.catalog_deps
            assert await demo.counts(deps) == {"products": 40, "images": 40}
            found = await client.get("/api/v1/products", params={"q": "tee"})
            assert found.status_code == 200
            assert found.json()
        finally:
            await client.aclose()
            await app.state.platform.stop()
    finally:
        await databases.drop()
