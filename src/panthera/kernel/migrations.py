"""Alembic, per service: its own history, its own version table, SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from panthera.kernel.db import Database, UTCDateTime


def alembic_config(migrations_dir: Path, service: str) -> Config:
    """An Alembic configuration pointing at one service's migrations."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("version_table", f"alembic_version_{service}")
    return config


async def upgrade(database: Database, migrations_dir: Path, service: str) -> None:
    """Bring a service's database to the newest revision."""

    def run(connection: Connection) -> None:
        config = alembic_config(migrations_dir, service)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with database.engine.begin() as conn:
        if not database.is_sqlite:
            # Replicas starting together would each see no version table and race
            # to create the schema; all but one would crash. The lock (held until
            # this transaction ends) makes the others wait, then find it at head.
            # SQLite needs none: its BEGIN IMMEDIATE already serialises writers.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"panthera.migrations.{service}"},
            )
        await conn.run_sync(run)


def _render_item(kind: str, item: Any, autogen_context: Any) -> str | bool:
    # Migrations name plain SQLAlchemy types: the UTC decorator is a Python-side concern.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Tables a migration made by hand (full-text search tables and their shadows)
    # are not in the models: autogenerate must not offer to drop them.
    return not (type_ == "table" and reflected and compare_to is None)


def schema_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """What autogenerate would change to make the database at ``connection`` match
    ``metadata``: nothing, when a service's migrations and its models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _include_object}
    )
    return list(compare_metadata(context, metadata))


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": config.get_main_option("version_table") or "alembic_version",
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        "render_as_batch": True,
        "compare_type": True,
        "render_item": _render_item,
        "include_object": _include_object,
    }
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def new_revision(migrations_dir: Path, service: str, url: str, message: str) -> None:
    """Write a revision of what the models add to the schema at ``url`` (autogenerate)."""
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg"))
    config = alembic_config(migrations_dir, service)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        command.revision(config, message=message, autogenerate=True)
    engine.dispose()


def outbox_keeps_only_unsent() -> None:
    """Migration steps for every service's event tables: an outbox row leaves once its
    event is sent (no more ``sent_at``), and the inbox gains the index of its purge."""
    from alembic import op

    # Sent rows were kept until now; nothing reads them.
    op.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("sent_at")
    op.create_index("ix_outbox_pending", "outbox", ["dead_at", "next_attempt_at"])
    op.create_index(
        "ix_inbox_applied_at", "inbox", ["applied_at"], postgresql_using="brin", unique=False
    )


def outbox_keeps_sent() -> None:
    """The downgrade of :func:`outbox_keeps_only_unsent` (sent rows deleted stay gone)."""
    import sqlalchemy as sa
    from alembic import op

    op.drop_index("ix_inbox_applied_at", table_name="inbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_outbox_pending", "outbox", ["sent_at", "dead_at", "next_attempt_at"])
