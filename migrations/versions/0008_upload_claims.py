"""upload claims: references a large re-upload counts ahead of its commit, under its lease

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 21:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upload_claims',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('lease_id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('digests', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['lease_id'], ['upload_leases.id'], name=op.f('fk_upload_claims_lease_id_upload_leases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_upload_claims_owner_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_claims'))
    )
    with op.batch_alter_table('upload_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_claims_lease_id'), ['lease_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('upload_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_claims_lease_id'))
    op.drop_table('upload_claims')
