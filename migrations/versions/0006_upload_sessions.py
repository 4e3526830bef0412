"""upload sessions: resumable uploads whose chunks wait as pending data for a day

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('upload_sessions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('uploader_id', sa.Integer(), nullable=False),
    sa.Column('ledger_id', sa.String(length=36), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('via', sa.String(length=8), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('remark', sa.String(length=200), nullable=False),
    sa.Column('ledger_name', sa.String(length=100), nullable=True),
    sa.Column('client_version', sa.String(length=64), nullable=False),
    sa.Column('if_match', sa.String(length=64), nullable=True),
    sa.Column('lease_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_upload_sessions_owner_id_members'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uploader_id'], ['members.id'], name=op.f('fk_upload_sessions_uploader_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_sessions'))
    )
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_uploader_id'), ['uploader_id'], unique=False)
    op.create_table('upload_session_chunks',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('digest', sa.LargeBinary(length=32), nullable=False),
    sa.Column('pack_id', sa.String(length=32), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('stored_length', sa.Integer(), nullable=False),
    sa.Column('raw_size', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['upload_sessions.id'], name=op.f('fk_upload_session_chunks_session_id_upload_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'digest', name=op.f('pk_upload_session_chunks'))
    )


def downgrade() -> None:
    op.drop_table('upload_session_chunks')
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_sessions_uploader_id'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_owner_id'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_expires_at'))
    op.drop_table('upload_sessions')
