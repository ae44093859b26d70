"""The analytics service: what the shop sells, to whom, and how browsing turns into orders."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition


def _router() -> APIRouter:
    from panthera.analytics.endpoints import router

    return router


def _definition() -> ServiceDefinition:
    from panthera.analytics.handlers import SUBSCRIPTIONS, write_batch
    from panthera.analytics.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="analytics",
        title="Analytics Service API",
        description=(
            "Reports for the shop: revenue, orders, average order value, best sellers, "
            "categories, new customers and the browse-to-purchase funnel, from every "
            "service's events."
        ),
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        subscriptions=SUBSCRIPTIONS,
        # Off the orders' critical path: fewer, larger transactions are worth
        # applying events one batch after another rather than side by side.
        consume_batch=32,
        # Reports and mail can be a fifth of a second late; a transaction per
        # few orders rather than per event or two is what that buys.
        consume_linger=0.2,
        before_commit=write_batch,
        handlers_on_sql=True,
    )


definition = _definition()

__all__ = ["definition"]
