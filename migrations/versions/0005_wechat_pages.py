"""wechat pages: page sessions, the shared access token, server secrets

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wechat_page_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('openid', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_wechat_page_sessions'))
    )
    with op.batch_alter_table('wechat_page_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_page_sessions_openid'), ['openid'], unique=False)
    op.create_table('wechat_tokens',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_wechat_tokens'))
    )
    op.create_table('server_secrets',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_server_secrets'))
    )


def downgrade() -> None:
    op.drop_table('server_secrets')
    op.drop_table('wechat_tokens')
    with op.batch_alter_table('wechat_page_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_page_sessions_openid'))
    op.drop_table('wechat_page_sessions')
