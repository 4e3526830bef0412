"""netdisk tokens name the session they were unlocked from (logout ends them)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_token_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_access_tokens_session_token_hash', ['session_token_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_access_tokens_session_token_hash')
        batch_op.drop_column('session_token_hash')
