"""Work gathered in a transaction must be written before the transaction commits."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from panthera.kernel.db import Database, UnitOfWork, WrittenBeforeCommit

_PENDING: WrittenBeforeCommit[list[int]] = WrittenBeforeCommit(
    "test rows", list, lambda found: bool(found)
)


def _uow(database: Database) -> UnitOfWork:
    async def no_outbox(*_: object) -> None:
        return None

    return UnitOfWork(database, source="test", outbox_insert=no_outbox)


async def test_a_commit_with_gathered_work_left_unwritten_is_refused(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        async with _uow(database) as uow:
            assert _PENDING.gathered(uow) is None
            _PENDING.of(uow).append(1)
            assert _PENDING.of(uow) == [1]
            with pytest.raises(RuntimeError, match="test rows were not written"):
                await uow.commit()
        async with _uow(database) as uow:
            gathered = _PENDING.of(uow)
            gathered.append(2)
            await uow.session.execute(text("SELECT 1"))
            gathered.clear()  # written
            await uow.commit()
            # What a committed transaction gathered is gone with it.
            assert _PENDING.gathered(uow) is None
    finally:
        await database.dispose()


async def test_a_rollback_drops_the_gathered_work(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        async with _uow(database) as uow:
            _PENDING.of(uow).append(1)
            await uow.rollback()
            assert _PENDING.gathered(uow) is None
            await uow.commit()
    finally:
        await database.dispose()
