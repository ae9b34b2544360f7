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


def upgrade() -> None:
    with op.batch_alter_table("learngenes") as batch:
        batch.add_column(sa.Column("refinement", sa.Text, nullable=True))  # JSON; NULL: extracted as is


def downgrade() -> None:
    with op.batch_alter_table("learngenes") as batch:
        batch.drop_column("refinement")
