"""The baseline of bench/load.py: a bare aiohttp handler answering `GET /api/v1/backups` with the same JSON
from the same database, by hand-written SQL (no middleware, no ORM, no unit of work).

`python -m bench.bare --database-url URL [--schema S] --port P [--loop asyncio|uvloop]` serves it on 127.0.0.1
until stopped. `--loop uvloop` runs it on the event loop `eacct serve` uses, so the comparison isolates what
eacct adds; asyncio's loop (the default) is the bare handler as aiohttp gives it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import datetime, timezone

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

TOKEN = text("SELECT member_id, kind, expires_at FROM access_tokens WHERE token_hash = :h")
LEDGERS = text(
    "SELECT l.id, l.name, o.id, o.account, o.nickname, v.public_id, v.year, v.remark, v.size, v.sha256, "
    "v.uploaded_at, u.id, u.account, u.nickname, v.via, v.client_version "
    "FROM ledgers l JOIN members o ON o.id = l.owner_id LEFT JOIN versions v ON v.ledger_id = l.id "
    "LEFT JOIN members u ON u.id = v.uploaded_by_id WHERE l.owner_id = :m ORDER BY l.name, l.id, v.year, v.id DESC")


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _iso(value) -> str:
    return _aware(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_app(database_url: str, schema: str) -> web.Application:
    args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(database_url, connect_args=args)

    async def backups(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        async with engine.connect() as connection:
            row = (await connection.execute(TOKEN, {"h": hashlib.sha256(token.encode()).hexdigest()})).first()
            if row is None or row.kind != "netdisk" or _aware(row.expires_at) <= datetime.now(timezone.utc):
                return web.json_response({"error": {"code": "unauthenticated"}}, status=401)
            rows = (await connection.execute(LEDGERS, {"m": row.member_id})).all()
        ledgers: dict[str, dict] = {}
        for r in rows:
            ledger = ledgers.setdefault(r[0], {"ledger_id": r[0], "name": r[1],
                                               "owner": {"id": r[2], "account": r[3], "nickname": r[4]}, "years": {}})
            if r[5] is None:
                continue
            version = {"version_id": r[5], "ledger_id": r[0], "year": r[6], "remark": r[7], "size": r[8],
                       "sha256": r[9], "uploaded_at": _iso(r[10]),
                       "uploaded_by": {"id": r[11], "account": r[12], "nickname": r[13]}, "via": r[14],
                       "client_version": r[15]}
            year = ledger["years"].setdefault(r[6], {"year": r[6], "latest": version, "versions_count": 0})
            year["versions_count"] += 1
        for ledger in ledgers.values():
            ledger["years"] = list(ledger["years"].values())
        return web.json_response({"ledgers": list(ledgers.values())}, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def close(app: web.Application) -> None:
        await engine.dispose()

    app = web.Application()
    app.router.add_get("/api/v1/backups", backups)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--schema", default="")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    loop = None
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(make_app(args.database_url, args.schema), host="127.0.0.1", port=args.port, access_log=None,
                print=lambda text: print(text, flush=True), loop=loop)


if __name__ == "__main__":
    main()
