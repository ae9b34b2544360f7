"""Genes record how many trailing axes are inputs (fan-in), for fan-in scaling and function-preserving resizes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("genes") as batch:
        batch.add_column(sa.Column("fan_in", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("genes") as batch:
        batch.drop_column("fan_in")
