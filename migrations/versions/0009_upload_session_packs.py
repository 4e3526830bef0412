"""upload session packs: a session holds the index rows of its packs (one row per batch, not one per chunk)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:30:00.000000
"""
import struct

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# eacct.netdisk.store.sessions.UNINDEXED, as of this revision.
_UNINDEXED = struct.Struct("<32sQII")


def upgrade() -> None:
    op.create_table('upload_session_packs',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('pack_id', sa.String(length=32), nullable=False),
    sa.Column('chunk_count', sa.Integer(), nullable=False),
    sa.Column('raw_bytes', sa.BigInteger(), nullable=False),
    sa.Column('unindexed', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['pack_id'], ['packs.id'], name=op.f('fk_upload_session_packs_pack_id_packs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['upload_sessions.id'], name=op.f('fk_upload_session_packs_session_id_upload_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'pack_id', name=op.f('pk_upload_session_packs'))
    )
    with op.batch_alter_table('upload_session_packs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_session_packs_pack_id'), ['pack_id'], unique=False)
    # Sessions running across the upgrade keep what they hold: their chunk rows grouped by pack (packs gc has already
    # reclaimed are dropped, as their chunks were), the chunks whose index row lies elsewhere recorded as unindexed.
    connection = op.get_bind()
    held = connection.execute(sa.text(
        'SELECT h.session_id, h.pack_id, h.digest, h."offset", h.stored_length, h.raw_size, '
        'EXISTS (SELECT 1 FROM chunks c WHERE c.pack_id = h.pack_id AND c.digest = h.digest) '
        'FROM upload_session_chunks h JOIN packs p ON p.id = h.pack_id ORDER BY h.session_id, h.pack_id'))
    batches: dict[tuple[str, str], list] = {}
    for session_id, pack_id, digest, offset, stored, raw, indexed in held:
        batch = batches.setdefault((session_id, pack_id), [0, 0, bytearray()])
        batch[0] += 1
        batch[1] += raw
        if not indexed:
            batch[2] += _UNINDEXED.pack(bytes(digest), offset, stored, raw)
    if batches:
        connection.execute(sa.text(
            "INSERT INTO upload_session_packs (session_id, pack_id, chunk_count, raw_bytes, unindexed) "
            "VALUES (:session_id, :pack_id, :chunk_count, :raw_bytes, :unindexed)"),
            [{"session_id": session_id, "pack_id": pack_id, "chunk_count": count, "raw_bytes": raw,
              "unindexed": bytes(unindexed)} for (session_id, pack_id), (count, raw, unindexed) in batches.items()])
    op.drop_table('upload_session_chunks')


def downgrade() -> None:
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
    connection = op.get_bind()
    connection.execute(sa.text(
        'INSERT INTO upload_session_chunks (session_id, digest, pack_id, "offset", stored_length, raw_size) '
        'SELECT s.session_id, c.digest, c.pack_id, c."offset", c.stored_length, c.raw_size '
        'FROM upload_session_packs s JOIN chunks c ON c.pack_id = s.pack_id'))
    rows = []
    for session_id, pack_id, unindexed in connection.execute(sa.text(
            "SELECT session_id, pack_id, unindexed FROM upload_session_packs")):
        for digest, offset, stored, raw in _UNINDEXED.iter_unpack(bytes(unindexed)):
            rows.append({"session_id": session_id, "digest": digest, "pack_id": pack_id, "offset": offset,
                         "stored_length": stored, "raw_size": raw})
    if rows:
        connection.execute(sa.text(
            'INSERT INTO upload_session_chunks (session_id, digest, pack_id, "offset", stored_length, raw_size) '
            "VALUES (:session_id, :digest, :pack_id, :offset, :stored_length, :raw_size) "
            "ON CONFLICT (session_id, digest) DO NOTHING"), rows)
    with op.batch_alter_table('upload_session_packs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_session_packs_pack_id'))
    op.drop_table('upload_session_packs')
