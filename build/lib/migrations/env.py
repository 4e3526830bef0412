"""Alembic environment: runs on the connection `eacct.migrate` hands over, or on its own async engine."""

from __future__ import annotations

import asyncio

from alembic import context

from eacct.db import create_engine
from eacct.models import Base

config = context.config
target_metadata = Base.metadata


def _run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(_run_on)
        await connection.commit()
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run_on(connection)
else:
    asyncio.run(_run_with_own_engine())
