"""outbox keeps only unsent events

Revision ID: 487eefe93022
Revises: abb49e7624cb
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

from panthera.kernel.migrations import outbox_keeps_only_unsent, outbox_keeps_sent

revision: str = "487eefe93022"
down_revision: str | None = "abb49e7624cb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_keeps_only_unsent()


def downgrade() -> None:
    outbox_keeps_sent()
