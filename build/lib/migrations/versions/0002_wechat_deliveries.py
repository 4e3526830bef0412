"""wechat deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:28:10.507277
"""
from alembic import op
import sqlalchemy as sa



revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wechat_deliveries',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_wechat_deliveries'))
    )
    with op.batch_alter_table('wechat_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wechat_deliveries_received_at'), ['received_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('wechat_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wechat_deliveries_received_at'))

    op.drop_table('wechat_deliveries')
