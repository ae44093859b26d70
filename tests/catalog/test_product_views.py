"""Product page views leave the catalog as a few batched events, not one per view."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from panthera.catalog.views import BATCH_PRODUCTS, ProductViews, publish_views
from tests.catalog.conftest import catalog_runtime


async def test_views_are_counted_in_memory_and_published_in_batches(tmp_path: Path) -> None:
    runtime = await catalog_runtime(f"sqlite+aiosqlite:///{tmp_path / 'catalog.sqlite3'}", tmp_path)
    try:
        views = ProductViews()
        popular = uuid.uuid4()
        for _ in range(1000):
            views.record(popular)
        others = [uuid.uuid4() for _ in range(BATCH_PRODUCTS + 10)]
        for product_id in others:
            views.record(product_id)
        assert await publish_views(views, runtime.uow) == len(others) + 1
        # Nothing new since: no event at all.
        assert await publish_views(views, runtime.uow) == 0
        outbox = runtime.definition.tables.outbox
        async with runtime.database.read_sessions() as session:
            rows = (await session.execute(select(outbox).order_by(outbox.c.seq))).all()
        assert [row.type for row in rows] == ["product.viewed", "product.viewed"]
        counts = {
            entry["product_id"]: entry["views"] for row in rows for entry in row.payload["counts"]
        }
        assert counts[str(popular)] == 1000
        assert sum(counts.values()) == 1000 + len(others)
        assert all(len(row.payload["counts"]) <= BATCH_PRODUCTS for row in rows)
        assert rows[0].payload["window_start"] <= rows[0].payload["window_end"]
    finally:
        await runtime.database.dispose()
