"""outbox keeps only unsent events

Revision ID: 6c4e280ce5b6
Revises: 3f649736c6b7
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

from panthera.kernel.migrations import outbox_keeps_only_unsent, outbox_keeps_sent

revision: str = "6c4e280ce5b6"
down_revision: str | None = "3f649736c6b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_keeps_only_unsent()


def downgrade() -> None:
    outbox_keeps_sent()
