"""Served processes move what their start-up built out of the collector's sight."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from panthera.runtime.apps import heap_frozen_after_startup


async def test_the_heap_is_frozen_once_startup_has_run() -> None:
    started: list[int] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append(gc.get_freeze_count())
        yield

    app = heap_frozen_after_startup(FastAPI(lifespan=lifespan))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            # The app's own start-up ran first, then everything alive was frozen.
            assert started == [0]
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_an_asgi_app_of_another_kind_is_served_as_it_is() -> None:
    async def bare(scope: object, receive: object, send: object) -> None:
        return None

    assert heap_frozen_after_startup(bare) is bare
