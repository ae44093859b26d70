"""outbox keeps only unsent events

Revision ID: 8277c9c649ae
Revises: 7c3e2f1a9b60
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

from panthera.kernel.migrations import outbox_keeps_only_unsent, outbox_keeps_sent

revision: str = "8277c9c649ae"
down_revision: str | None = "7c3e2f1a9b60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_keeps_only_unsent()


def downgrade() -> None:
    outbox_keeps_sent()
