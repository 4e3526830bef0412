"""drop wechat deliveries: the bot's answers only read, so a redelivered message is answered again and nothing
remembers deliveries any more

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('wechat_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_deliveries_received_at'))

    op.drop_table('wechat_deliveries')


def downgrade() -> None:
    op.create_table('wechat_deliveries',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_wechat_deliveries'))
    )
    with op.batch_alter_table('wechat_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_deliveries_received_at'), ['received_at'], unique=False)
