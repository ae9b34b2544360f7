"""Learngenes keep what calibration measured on the source (per-axis importance, block influence), so
materialization can order every axis by importance without data (see zoo.importance).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Plain ALTER TABLE for a nullable column (as 0003): the learngenes table is never rebuilt.
def upgrade() -> None:
    op.add_column("learngenes", sa.Column("calibration", sa.LargeBinary, nullable=True))  # NULL: not calibrated


def downgrade() -> None:
    op.drop_column("learngenes", "calibration")
