"""The migration that keeps each product's cover image fills it in for existing products."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from panthera.catalog import service
from panthera.kernel.migrations import alembic_config
from panthera.kernel.service import ServiceRuntime
from tests.catalog.conftest import create_product

pytestmark = pytest.mark.integration

MIGRATIONS = Path(service.__file__).parent / "migrations"
BEFORE = "a028421c5665"


async def _migrate(runtime: ServiceRuntime, target: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(MIGRATIONS, "catalog")
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, target)

    async with runtime.database.engine.begin() as conn:
        await conn.run_sync(run)


async def _covers(runtime: ServiceRuntime) -> dict[str, str | None]:
    async with runtime.database.engine.connect() as conn:
        rows = await conn.execute(text("SELECT name, cover_image FROM products"))
        return {name: cover for name, cover in rows}


async def test_on_sqlite(sqlite_catalog: ServiceRuntime) -> None:
    await _existing_products_get_their_first_images_cover(sqlite_catalog)


async def test_on_postgres(pg_catalog: ServiceRuntime) -> None:
    await _existing_products_get_their_first_images_cover(pg_catalog)


async def _existing_products_get_their_first_images_cover(runtime: ServiceRuntime) -> None:
    pictured, _ = await create_product(runtime, name="Pictured")
    await create_product(runtime, name="Plain")
    originals_only, _ = await create_product(runtime, name="Originals only")
    async with runtime.uow() as uow:
        for product_id, keys in (
            (pictured, {"original": "p/1.webp", "medium": "p/1m.webp"}),
            (pictured, {"original": "p/2.webp", "medium": "p/2m.webp"}),
            (originals_only, {"original": "o/1.webp", "medium": ""}),
        ):
            await service.add_image(
                uow, product_id, image_id=uuid.uuid4(), keys=keys, width=1, height=1, alt=""
            )
        await uow.commit()
    expected = {"Pictured": "p/1m.webp", "Plain": None, "Originals only": "o/1.webp"}
    assert await _covers(runtime) == expected

    await _migrate(runtime, BEFORE, down=True)
    async with runtime.database.engine.connect() as conn:
        images = await conn.execute(text("SELECT count(*) FROM product_images"))
        assert images.scalar_one() == 3
    await _migrate(runtime, "head")
    assert await _covers(runtime) == expected
