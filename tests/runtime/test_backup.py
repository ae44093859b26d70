"""Back up, destroy, restore: every user and product comes back, in both shapes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from panthera.cli import seed_demo
from panthera.kernel.settings import Settings
from panthera.runtime import backup as backups
from panthera.runtime.admin import create_administrator
from panthera.runtime.registry import SERVICE_NAMES
from tests.conftest import PASSWORD, make_settings
from tests.integration.conftest import DATABASE_URL, PostgresServer, ServiceDatabases, unique_prefix

pytestmark = pytest.mark.timeout(240)

ADMIN = "backup-admin@example.com"


async def contents(settings: Settings) -> dict[str, dict[str, int]]:
    """Rows per table of every service's database."""
    found: dict[str, dict[str, int]] = {}
    for service in SERVICE_NAMES:
        engine = create_async_engine(settings.database_url_for(service))
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
                found[service] = {
                    table: (
                        await connection.execute(text(f'SELECT count(*) FROM "{table}"'))  # noqa: S608
                    ).scalar_one()
                    for table in tables
                }
        finally:
            await engine.dispose()
    return found


async def fill(settings: Settings) -> None:
    await create_administrator(settings, ADMIN, PASSWORD, "Ada", "Admin")
    await seed_demo(settings, products=6)


async def emails(settings: Settings) -> set[str]:
    engine = create_async_engine(settings.database_url_for("users"))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT email FROM users"))
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


def check_restored(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> None:
    assert after == before
    assert before["users"]["users"] >= 1
    assert before["catalog"]["products"] == 6


async def test_the_embedded_shape_comes_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", password_memory_kib=1024)
    await fill(settings)
    before = await contents(settings)

    taken = backups.backup(settings, tmp_path / "backup")
    assert {entry.service for entry in taken} == set(SERVICE_NAMES)
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert {entry["kind"] for entry in manifest["services"]} == {"sqlite"}

    for service in SERVICE_NAMES:
        Path(settings.database_url_for(service).split("///", 1)[1]).unlink()
    backups.restore(settings, tmp_path / "backup")

    check_restored(before, await contents(settings))
    assert ADMIN in await emails(settings)


def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "users.sqlite3").write_bytes(b"not a database")
    (backup_dir / "manifest.json").write_text(
        json.dumps(
            {
                "format": 1,
                "services": [
                    {"service": "users", "file": "users.sqlite3", "kind": "sqlite", "sha256": "0"}
                ],
            }
        )
    )
    with pytest.raises(backups.BackupError, match="damaged"):
        backups.restore(settings, backup_dir)
    with pytest.raises(backups.BackupError, match="not empty"):
        backups.backup(settings, backup_dir)


def test_libpq_urls_take_the_platform_url() -> None:
    assert (
        backups.libpq_url("postgresql+asyncpg://u:p%40ss@db:5432/panthera_users?ssl=require")
        == "postgresql://u:p%40ss@db:5432/panthera_users?sslmode=require"
    )


@pytest.mark.integration
async def test_the_distributed_shape_comes_back(tmp_path: Path) -> None:
    postgres = PostgresServer(DATABASE_URL)
    databases = ServiceDatabases(postgres, unique_prefix())
    await databases.create(SERVICE_NAMES)
    try:
        await _round_trip(tmp_path, postgres, databases)
    finally:
        await databases.drop()


async def _round_trip(
    tmp_path: Path, postgres: PostgresServer, databases: ServiceDatabases
) -> None:
    settings = make_settings(
        tmp_path / "data", database_url=databases.url_template, password_memory_kib=1024
    )
    await fill(settings)
    before = await contents(settings)
    backups.backup(settings, tmp_path / "backup")

    # Destroyed: every database dropped and made again, empty.
    connection = await postgres.connect()
    try:
        for name in databases.names.values():
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await connection.close()
    assert all(not tables for tables in (await contents(settings)).values())

    await asyncio.to_thread(backups.restore, settings, tmp_path / "backup")
    check_restored(before, await contents(settings))
    assert ADMIN in await emails(settings)
