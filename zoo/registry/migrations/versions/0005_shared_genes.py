"""Content-addressed genes: a gene whose bytes another learngene stores refers to that row (``genes.data_of``)
instead of holding a copy (see zoo.registry.sharing).

Existing registries are moved over here: in each group of published genes with one sha256 and size, the lowest id
whose bytes really hash to it stays the owner, and the rows of *other* learngenes whose bytes hash to it too become
references to it. A row whose bytes do not match its sha256 keeps them, so `zoo verify` still reports it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STAGED = "~staging-%"  # zoo.registry.models.STAGING_PREFIX as of this revision: staged rows are left alone


# Plain ALTER TABLE (as 0003): SQLite takes a nullable column with REFERENCES in place, so genes is never rebuilt
# on the way up. alembic's add_column would emit the foreign key as a separate ALTER, which SQLite lacks.
def upgrade() -> None:
    op.execute("ALTER TABLE genes ADD COLUMN data_of INTEGER REFERENCES genes (id)")
    op.create_index("ix_genes_data_of", "genes", ["data_of"])
    op.create_index("ix_genes_sha256", "genes", ["sha256"])
    conn = op.get_bind()
    groups = conn.execute(sa.text(
        "SELECT g.sha256, g.nbytes FROM genes g JOIN learngenes l ON l.id = g.learngene_id WHERE l.name NOT LIKE "
        ":staged GROUP BY g.sha256, g.nbytes HAVING count(DISTINCT g.learngene_id) > 1"), {"staged": STAGED}).all()
    for digest, nbytes in groups:
        rows = conn.execute(sa.text(
            "SELECT g.id, g.learngene_id FROM genes g JOIN learngenes l ON l.id = g.learngene_id WHERE g.sha256 = :s "
            "AND g.nbytes = :n AND l.name NOT LIKE :staged ORDER BY g.id"),
            {"s": digest, "n": nbytes, "staged": STAGED}).all()
        owner = None
        for gene_id, learngene_id in rows:  # one gene's bytes in memory at a time
            data = conn.execute(sa.text("SELECT data FROM genes WHERE id = :i"), {"i": gene_id}).scalar_one()
            if hashlib.sha256(data).hexdigest() != digest:
                continue
            if owner is None:
                owner = (gene_id, learngene_id)
            elif learngene_id != owner[1]:
                conn.execute(sa.text("UPDATE genes SET data = :d, data_of = :o WHERE id = :i"),
                             {"d": b"", "o": owner[0], "i": gene_id})


def downgrade() -> None:
    op.execute("UPDATE genes SET data = (SELECT o.data FROM genes o WHERE o.id = genes.data_of) "
               "WHERE data_of IS NOT NULL")
    op.execute("UPDATE genes SET data_of = NULL")
    op.drop_index("ix_genes_sha256", "genes")
    op.drop_index("ix_genes_data_of", "genes")
    # SQLite cannot drop a column that a foreign key uses: batch mode rebuilds genes without it. Nothing refers to
    # genes but genes, and no row refers to another any more, so the rebuild's DROP TABLE cascades nowhere.
    with op.batch_alter_table("genes") as batch:
        batch.drop_column("data_of")
