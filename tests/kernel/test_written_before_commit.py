"""Work gathered in a transaction must be written before the transaction commits."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from panthera.kernel.db import Database, WrittenBeforeCommit

_PENDING: WrittenBeforeCommit[list[int]] = WrittenBeforeCommit(
    "test rows", list, lambda found: bool(found)
)


async def test_a_commit_with_gathered_work_left_unwritten_is_refused(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        async with database.sessions() as session:
            assert _PENDING.gathered(session) is None
            _PENDING.of(session).append(1)
            assert _PENDING.of(session) == [1]
            with pytest.raises(RuntimeError, match="test rows were not written"):
                await session.commit()
        async with database.sessions() as session:
            gathered = _PENDING.of(session)
            gathered.append(2)
            await session.execute(text("SELECT 1"))
            gathered.clear()  # written
            await session.commit()
    finally:
        await database.dispose()
