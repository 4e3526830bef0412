"""The schema is made only by alembic, and the migrated schema matches the models (no drift)."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from eacct.db import create_engine, utcnow
from eacct.migrate import downgrade, upgrade
from eacct.models import Base
from eacct.netdisk.store.sessions import UNINDEXED
from tests.conftest import POSTGRES_URL


async def test_migrated_schema_matches_the_models(engine):
    def diff(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_every_table_is_made_by_the_migrations(engine):
    def tables(connection):
        from sqlalchemy import inspect

        return set(inspect(connection).get_table_names())

    async with engine.connect() as connection:
        present = await connection.run_sync(tables)
    assert set(Base.metadata.tables) <= present and "alembic_version" in present


async def test_a_session_running_across_migration_0009_keeps_what_it_holds(tmp_path):
    """0009 replaced a session's row per chunk by a row per pack: a session open during the upgrade holds the same
    chunks after it (those whose index row lies elsewhere recorded as unindexed), and after a downgrade again."""
    engine, schema = await _database_at("0008", tmp_path)
    try:
        await _check_0009(engine)
    finally:
        await engine.dispose()
        if schema:
            cleanup = create_engine(POSTGRES_URL)
            async with cleanup.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await cleanup.dispose()


async def _check_0009(engine) -> None:
    digests = [bytes([number]) * 32 for number in range(4)]
    async with engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO members (id, account, password_hash, nickname, created_at) VALUES (1, 'o', 'x', 'o', :now)"),
            {"now": utcnow()})
        for pack in ("pack-a", "pack-b", "pack-other"):
            await connection.execute(text(
                "INSERT INTO packs (id, owner_id, blob_key, size, committed, created_at, lease_id) "
                "VALUES (:id, 1, :id, 100, FALSE, :now, 'lease')"), {"id": pack, "now": utcnow()})
        await connection.execute(text(
            "INSERT INTO upload_sessions (id, owner_id, uploader_id, ledger_id, year, via, size, sha256, remark, "
            "client_version, lease_id, created_at, expires_at) VALUES ('s', 1, 1, 'l', 2019, 'backup', 400, 'x', '', "
            "'', 'lease', :now, :now)"), {"now": utcnow()})
        places = [(digests[0], "pack-a", 0), (digests[1], "pack-a", 10), (digests[2], "pack-b", 0),
                  (digests[3], "pack-gone", 0)]
        for digest, pack, offset in places:
            await connection.execute(text(
                'INSERT INTO upload_session_chunks (session_id, digest, pack_id, "offset", stored_length, raw_size) '
                "VALUES ('s', :digest, :pack, :offset, 10, 100)"), {"digest": digest, "pack": pack, "offset": offset})
        # digests[1]'s index row lies in another upload's pack; digests[3]'s pack was reclaimed by gc.
        for digest, pack in ((digests[0], "pack-a"), (digests[1], "pack-other"), (digests[2], "pack-b")):
            await connection.execute(text(
                'INSERT INTO chunks (owner_id, digest, pack_id, "offset", stored_length, raw_size, refs) '
                "VALUES (1, :digest, :pack, 0, 10, 100, 0)"), {"digest": digest, "pack": pack})
    await upgrade(engine, "0009")
    async with engine.connect() as connection:
        packs = (await connection.execute(text(
            "SELECT pack_id, chunk_count, raw_bytes, unindexed FROM upload_session_packs ORDER BY pack_id"))).all()
    assert [(pack, count, raw) for pack, count, raw, _ in packs] == [("pack-a", 2, 200), ("pack-b", 1, 100)]
    assert bytes(packs[0][3]) == UNINDEXED.pack(digests[1], 10, 10, 100) and bytes(packs[1][3]) == b""
    await downgrade(engine, "0008")
    async with engine.connect() as connection:
        held = (await connection.execute(text(
            'SELECT digest, pack_id, "offset" FROM upload_session_chunks ORDER BY digest'))).all()
    assert [(bytes(digest), pack, offset) for digest, pack, offset in held] == [
        (digests[0], "pack-a", 0), (digests[1], "pack-a", 10), (digests[2], "pack-b", 0)]


async def _database_at(revision: str, tmp_path):
    """A fresh database at `revision`: a SQLite file, or a new PostgreSQL schema (named) when the run uses
    PostgreSQL."""
    schema = None
    if POSTGRES_URL:
        schema = f"eacct_migration_{uuid.uuid4().hex[:12]}"
        engine = create_engine(POSTGRES_URL)
        async with engine.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await engine.dispose()
        engine = create_engine(POSTGRES_URL, schema=schema)
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}")
    await upgrade(engine, revision)
    return engine, schema
