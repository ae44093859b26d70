"""Product page views, counted in memory and published in batches for analytics."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from panthera.catalog.events import ProductViewed, ViewCount
from panthera.kernel.db import UnitOfWork

# Products per event: keeps one event's payload small however wide the browsing.
BATCH_PRODUCTS = 500


class ProductViews:
    """A counter the product page bumps; :func:`publish_views` empties it into events."""

    def __init__(self) -> None:
        self._counts: Counter[uuid.UUID] = Counter()
        self._since = datetime.now(UTC)

    def record(self, product_id: uuid.UUID) -> None:
        self._counts[product_id] += 1

    def take(self) -> tuple[datetime, datetime, Counter[uuid.UUID]]:
        """The window's counts, and a fresh window."""
        counts, since, now = self._counts, self._since, datetime.now(UTC)
        self._counts, self._since = Counter(), now
        return since, now, counts


async def publish_views(views: ProductViews, uow: Callable[[], UnitOfWork]) -> int:
    """Publish the counts so far as ``product.viewed`` events; how many products were counted."""
    since, until, counts = views.take()
    if not counts:
        return 0
    pairs = sorted(counts.items())
    async with uow() as unit:
        for start in range(0, len(pairs), BATCH_PRODUCTS):
            unit.publish(
                ProductViewed(
                    window_start=since,
                    window_end=until,
                    counts=[
                        ViewCount(product_id=product_id, views=count)
                        for product_id, count in pairs[start : start + BATCH_PRODUCTS]
                    ],
                )
            )
        await unit.commit()
    return len(pairs)
