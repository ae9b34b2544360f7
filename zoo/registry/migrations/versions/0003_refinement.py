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


# Plain ALTER TABLE, not batch mode: SQLite >= 3.35 and PostgreSQL add and drop a nullable column in place, so the
# learngenes table is never rebuilt. A rebuild drops the old table, which cascade-deletes every gene and asset
# whenever foreign keys are on (zoo db upgrade turns them off, but a direct `alembic downgrade` does not).
def upgrade() -> None:
    op.add_column("learngenes", sa.Column("refinement", sa.Text, nullable=True))  # JSON; NULL: extracted as is


def downgrade() -> None:
    op.drop_column("learngenes", "refinement")
