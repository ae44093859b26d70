"""outbox keeps only unsent events

Revision ID: d6b3d06180f5
Revises: a5c09191fbad
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

from panthera.kernel.migrations import outbox_keeps_only_unsent, outbox_keeps_sent

revision: str = "d6b3d06180f5"
down_revision: str | None = "a5c09191fbad"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_keeps_only_unsent()


def downgrade() -> None:
    outbox_keeps_sent()
