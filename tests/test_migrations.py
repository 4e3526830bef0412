"""The schema is made only by alembic, and the migrated schema matches the models (no drift)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from eacct.models import Base


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
