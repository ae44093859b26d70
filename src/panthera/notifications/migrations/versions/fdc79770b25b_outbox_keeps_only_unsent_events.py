"""outbox keeps only unsent events

Revision ID: fdc79770b25b
Revises: b85648512d27
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

from panthera.kernel.migrations import outbox_keeps_only_unsent, outbox_keeps_sent

revision: str = "fdc79770b25b"
down_revision: str | None = "b85648512d27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_keeps_only_unsent()


def downgrade() -> None:
    outbox_keeps_sent()
