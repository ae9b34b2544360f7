"""Initial schema: learngenes, their genes (coefficient blocks) and assets.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learngenes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("family", sa.String(100), nullable=False, index=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("source_config", sa.Text, nullable=False),
        sa.Column("transform", sa.String(100), nullable=False),
        sa.Column("transform_params", sa.Text, nullable=False),
        sa.Column("keep", sa.Text, nullable=False),
        sa.Column("dtype", sa.String(20), nullable=False),
        sa.Column("zoo_version", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("learngenes.id", ondelete="SET NULL"), nullable=True),
        sa.Column("notes", sa.Text, nullable=True),
    )
    op.create_table(
        "genes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("learngene_id", sa.Integer, sa.ForeignKey("learngenes.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("axes", sa.Text, nullable=False),
        sa.Column("source_shape", sa.Text, nullable=False),
        sa.Column("shape", sa.Text, nullable=False),
        sa.Column("dtype", sa.String(20), nullable=False),
        sa.Column("nbytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("learngene_id", "name", name="uq_gene_name"),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("learngene_id", sa.Integer, sa.ForeignKey("learngenes.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("learngene_id", "filename", name="uq_asset_filename"),
    )


def downgrade() -> None:
    op.drop_table("assets")
    op.drop_table("genes")
    op.drop_table("learngenes")
