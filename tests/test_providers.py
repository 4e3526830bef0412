"""One wiring: the app and every `eacct` command get engine, sessions and blob store from `eacct.providers`."""

from __future__ import annotations

import json

from aiohttp import web

import eacct.providers
from eacct.app import create_app
from eacct.cli import main
from eacct.config import Settings


def count_provided(monkeypatch) -> list[str]:
    """Record (by dialect) every session factory the provider makes."""
    made: list[str] = []
    real = eacct.providers.make_session_factory

    def spy(engine):
        made.append(engine.dialect.name)
        return real(engine)

    monkeypatch.setattr(eacct.providers, "make_session_factory", spy)
    return made


def test_every_cli_command_gets_its_database_from_the_app_provider(cli_env, capsys, monkeypatch):
    made = count_provided(monkeypatch)
    assert main(["migrate"]) == 0
    assert main(["member", "create", "--account", "provider_m", "--nickname", "小李", "--password", "secret-1"]) == 0
    assert main(["message", "broadcast", "--title", "通知", "--body", "维护"]) == 0
    assert main(["gc", "--grace-seconds", "0"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["chunks"] == 0
    assert len(made) == 4


async def test_create_app_gets_its_database_and_storage_from_the_same_provider(tmp_path, monkeypatch):
    made = count_provided(monkeypatch)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/e.db", storage_url=f"file://{tmp_path}/blobs")
    runner = web.AppRunner(create_app(settings, collect_garbage_on_start=False))
    await runner.setup()
    try:
        assert made == ["sqlite"]
    finally:
        await runner.cleanup()
