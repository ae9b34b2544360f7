"""Learngenes record how they were refined (FRONT+: lambda, steps, data, energy in the block before/after).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: SQLite's batch mode rebuilds the table, and dropping the old learngenes table
# would cascade-delete every gene and asset (their foreign keys say ON DELETE CASCADE). SQLite >= 3.35 and
# PostgreSQL both add and drop a column in place.
def upgrade() -> None:
    op.add_column("learngenes", sa.Column("refinement", sa.Text, nullable=True))  # JSON; NULL: extracted as is


def downgrade() -> None:
    op.drop_column("learngenes", "refinement")
