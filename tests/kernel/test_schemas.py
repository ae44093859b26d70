"""Every service's migrations make exactly the schema its models describe (SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from panthera.kernel.db import Database
from panthera.kernel.migrations import schema_differences, upgrade
from panthera.runtime.registry import SERVICE_NAMES, definition


@pytest.mark.parametrize("name", SERVICE_NAMES)
async def test_the_migrations_make_the_models_schema(name: str, tmp_path: Path) -> None:
    service = definition(name)
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/{name}.sqlite3")
    try:
        await upgrade(database, service.migrations_dir, name)
        async with database.engine.connect() as conn:
            found = await conn.run_sync(schema_differences, service.metadata)
    finally:
        await database.dispose()
    assert found == []
