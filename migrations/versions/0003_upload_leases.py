"""upload leases: pending packs belong to an upload whose process keeps a heartbeat

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upload_leases',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_leases'))
    )
    with op.batch_alter_table('upload_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_leases_heartbeat_at'), ['heartbeat_at'], unique=False)
    with op.batch_alter_table('packs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_packs_lease_id'), ['lease_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('packs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_packs_lease_id'))
        batch_op.drop_column('lease_id')
    with op.batch_alter_table('upload_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_leases_heartbeat_at'))
    op.drop_table('upload_leases')
