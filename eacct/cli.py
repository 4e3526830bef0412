"""The `eacct` command: serve, migrate, member create, gc, message broadcast, storage check."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import getpass
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from pydantic import ValidationError

from eacct import errors
from eacct.app import create_app
from eacct.config import Settings
from eacct.db import unit_of_work
from eacct.providers import provide
from eacct.secrets import PasswordHashing, hash_secret
from eacct.startup import SettingError, bind_listeners, open_storage

__all__ = ["main"]

WORKER_THREADS = 4
# Two pools of worker threads. The bulk pool does large transfers' block work (hashing, cutting, compressing,
# decompressing; BlobStore.bulk_executor) and password hashing. At the same priority as the event loop and the
# database threads, a CPU-bound 1 GB upload takes the cores from every other member's requests: their small
# writes, each a dozen trips between the loop and its database thread, held SQLite's write lock 5x longer and
# queued up to a second (bench/commit_block.py). The bulk pool runs at the lowest priority instead: it gets
# whatever the request path leaves, which on an otherwise idle machine is all of it. The default pool runs the
# short hops (a file opened, fsynced, renamed; a small transfer's blocks) at the request path's priority: in the
# bulk pool, a 16 KiB upload's ten hops queued behind a large upload's blocks and took 0.4-0.5 s.
WORKER_NICENESS = 19
# How long a thread may run Python before another that waits for the GIL gets it (CPython's default is 5 ms).
# The event loop runs Python nearly all the time under load, so a database thread woken with its statement's
# result, or with the next statement, waited up to 5 ms for the GIL, and a small upload's commit is about fifteen
# such trips while it holds SQLite's write lock. At 1 ms, other members' small uploads during a 1 GB re-upload
# took p99 ~200 ms instead of 260-580, and list requests at 200 req/s p99 ~45 ms instead of 50-75
# (bench/commit_block.py, bench/load.py).
GIL_SWITCH_SECONDS = 0.001
M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
# After the app's own shutdown (which finishes or cancels requests under way), how long aiohttp may still
# wait for a connection's handler; nothing should be left by then.
RUNNER_SHUTDOWN_SECONDS = 1.0


async def _with_database(settings: Settings, work: Callable) -> object:
    """Run `work(sessions)` on the migrated database, opened by the provider the app uses too."""
    async with provide(settings, storage=False) as provided:
        return await work(provided.sessions)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers or settings.workers
    if workers > 1:
        return serve_workers(settings, workers)
    return run_serving(_serve(settings))


def run_serving(main: Coroutine[object, object, int]) -> int:
    """Run a serving coroutine on uvloop's event loop where it is installed (libuv: cheaper wake-ups from the
    database and worker threads, a faster socket path), else on asyncio's own; threads hand the GIL on after
    `GIL_SWITCH_SECONDS`."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        import uvloop
    except ImportError:  # not on Windows; serving still works, more slowly
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _serve(settings: Settings, *, reuse_port: bool = False, migrate: bool = True,
                 collect_garbage: bool = True, name: str = "eacct") -> int:
    """Check and open everything, listen, serve until SIGINT/SIGTERM, then shut down within seconds."""
    log = logging.getLogger("eacct")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    async def few_worker_threads(app: web.Application) -> None:
        loop.set_default_executor(worker_pool())

    # The port first: nothing is opened or migrated for a service that could not listen anyway.
    listeners = bind_listeners(settings, reuse_port=reuse_port)
    bulk = bulk_pool()
    try:
        async with provide(settings, migrate=migrate, probe_writes=True) as provided:
            provided.blobs.bulk_executor = bulk
            app = create_app(settings, engine=provided.engine, blobs=provided.blobs,
                             collect_garbage_on_start=collect_garbage, hashing=PasswordHashing(executor=bulk))
            app.on_startup.append(few_worker_threads)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=RUNNER_SHUTDOWN_SECONDS)
            await runner.setup()
            try:
                addresses = []
                for sock in listeners:
                    await web.SockSite(runner, sock).start()
                    host, port = sock.getsockname()[:2]
                    addresses.append(f"http://{f'[{host}]' if ':' in host else host}:{port}")
                freeze_start_up_objects()
                log.info("%s serving on %s", name, ", ".join(addresses))
                await stopping.wait()
                log.info("eacct stopping: no new connections; requests under way get a moment to finish")
            finally:
                await runner.cleanup()  # stop listening, finish/cancel requests, close app resources
    finally:
        for sock in listeners:
            sock.close()
        bulk.shutdown(wait=True)  # requests are over: whatever still runs there is a cancelled upload's last block
    log.info("eacct stopped")
    return 0


# ------------------------------------------------------------------------------------- serve --workers


def serve_workers(settings: Settings, workers: int) -> int:
    """Serve from `workers` processes on one port (SO_REUSEPORT: the kernel spreads connections over them).

    Migrations run here, once, before any worker starts; only the first worker runs the start-up gc. Each
    worker has its own event loop and database pool. A worker that dies stops the others; SIGTERM or SIGINT
    here is passed on to every worker, which then shuts down as a single `eacct serve` does."""
    async def check_and_migrate() -> None:
        async with provide(settings, probe_writes=True):  # a bad setting stops here, in one line, before any worker
            pass

    asyncio.run(check_and_migrate())
    log = logging.getLogger("eacct")
    log.info("eacct starting %s worker processes on %s:%s", workers, settings.host, settings.port)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no event loop or pool inherited
    children = [context.Process(target=_serve_worker, args=(settings, index, workers), name=f"eacct-worker-{index}")
                for index in range(workers)]
    stopping = failed = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            if not stopping:  # a signal during start-up: start no more
                child.start()
        while not stopping or any(child.is_alive() for child in children):
            exited = [child for child in children if child.exitcode is not None]
            if exited and not stopping:
                failed = True
                log.error("worker %s exited with %s; stopping the others", exited[0].name, exited[0].exitcode)
                stop(signal.SIGTERM, None)
            running = [child.sentinel for child in children if child.is_alive()]
            if not running:
                break
            multiprocessing.connection.wait(running)
        for child in children:
            if child.pid is not None:
                child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed or any(child.exitcode for child in children) else 0


def _serve_worker(settings: Settings, index: int, workers: int) -> None:
    """One worker process of `serve_workers`: the app on the shared port, without migrating."""
    _tune_malloc()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = f"eacct worker {index + 1}/{workers} (pid {os.getpid()})"
    sys.exit(run_serving(_serve(settings, reuse_port=True, migrate=False, collect_garbage=index == 0, name=name)))


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> None:
        async with provide(settings, storage=False, revision=args.revision):
            pass

    asyncio.run(run())
    print(f"database at {args.revision}")
    return 0


def cmd_member_create(settings: Settings, args: argparse.Namespace) -> int:
    from eacct.members import service
    from eacct.members.schemas import MemberOut, NewMember

    password = args.password
    if not password:
        if not sys.stdin.isatty():
            raise SettingError("--password", "没有终端可以输入密码；请用 --password 给出密码")
        try:
            password = getpass.getpass("password: ")
        except (EOFError, KeyboardInterrupt):
            raise SettingError("--password", "没有输入密码") from None
    try:
        body = NewMember(account=args.account, password=password, nickname=args.nickname)
    except ValidationError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2

    async def work(sessions):
        password_hash = await hash_secret(settings, body.password)  # before the transaction, not inside it
        async with unit_of_work(sessions) as session:
            member = await service.create_member(session, body.account, password_hash, body.nickname)
            return MemberOut.model_validate(member).model_dump(mode="json")

    print(json.dumps(asyncio.run(_with_database(settings, work)), ensure_ascii=False))
    return 0


def cmd_gc(settings: Settings, args: argparse.Namespace) -> int:
    from eacct.netdisk.store import collect_garbage

    if args.grace_seconds is not None:
        settings = settings.with_overrides(gc_grace_seconds=args.grace_seconds)

    async def run():
        async with provide(settings) as provided:
            return await collect_garbage(provided.sessions, provided.blobs, settings)

    print(json.dumps(asyncio.run(run())))
    return 0


def cmd_message_broadcast(settings: Settings, args: argparse.Namespace) -> int:
    from eacct.share import service
    from eacct.share.schemas import MessageOut

    async def work(sessions):
        async with unit_of_work(sessions) as session:
            message = await service.broadcast(session, args.title, args.body)
            return MessageOut.model_validate(message).model_dump(mode="json")

    print(json.dumps(asyncio.run(_with_database(settings, work)), ensure_ascii=False))
    return 0


def cmd_storage_check(settings: Settings, args: argparse.Namespace) -> int:
    from eacct.storage.check import run_storage_check

    async def run():
        # Storage alone: the check must work before any database exists.
        blobs = open_storage(settings, probe_writes=False)
        try:
            return await run_storage_check(blobs)
        finally:
            await blobs.close()

    results = asyncio.run(run())
    for step, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {step}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def cmd_wechat_menu(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError
    from wechatpy.exceptions import WeChatClientException

    from eacct.wechat.menu import create_menu

    try:
        answer = create_menu(settings)
    except (ValueError, WeChatClientException, OSError, SQLAlchemyError) as exc:
        print(f"menu not published: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eacct", description="e会计 cloud backup and share service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply migrations, then serve on EACCT_HOST:EACCT_PORT")
    serve.add_argument("--workers", type=int, help="server processes on the one port (default EACCT_WORKERS or 1)")
    serve.set_defaults(run=cmd_serve)
    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(run=cmd_migrate)
    member = commands.add_parser("member", help="member accounts").add_subparsers(dest="member_command", required=True)
    create = member.add_parser("create", help="create a member account")
    create.add_argument("--account", required=True)
    create.add_argument("--nickname", required=True)
    create.add_argument("--password", help="asked for when left out")
    create.set_defaults(run=cmd_member_create)
    gc = commands.add_parser("gc", help="reclaim storage that no version uses")
    gc.add_argument("--grace-seconds", type=int, help="leave blobs no pack row names, and pending packs without an upload lease, younger than this (default 6 h)")
    gc.set_defaults(run=cmd_gc)
    message = commands.add_parser("message", help="message center").add_subparsers(dest="message_command", required=True)
    broadcast = message.add_parser("broadcast", help="send a system message to every member")
    broadcast.add_argument("--title", required=True)
    broadcast.add_argument("--body", required=True)
    broadcast.set_defaults(run=cmd_message_broadcast)
    storage = commands.add_parser("storage", help="blob storage").add_subparsers(dest="storage_command", required=True)
    storage.add_parser("check", help="write, read back, range-read and delete a probe object").set_defaults(
        run=cmd_storage_check)
    wechat = commands.add_parser("wechat", help="WeChat official account").add_subparsers(dest="wechat_command",
                                                                                          required=True)
    wechat.add_parser("menu", help="publish the menu (帮助, 网盘共享, 会员中心 → the member pages)").set_defaults(run=cmd_wechat_menu)
    return parser


def worker_pool() -> ThreadPoolExecutor:
    """The loop's default executor: short blocking hops, at the request path's CPU priority."""
    return ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="eacct-worker")


def bulk_pool() -> ThreadPoolExecutor:
    """Threads for bulk work: few (each would otherwise grow a glibc memory arena of its own, most of what a large
    transfer leaves behind in RSS), and below the request path in CPU priority (`WORKER_NICENESS`)."""
    return ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="eacct-bulk",
                              initializer=lower_thread_priority)


def lower_thread_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux, where niceness is per thread; elsewhere setting
    it would renice the whole process, so nothing is done)."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except OSError:  # a sandbox that forbids it: the workers keep the process's priority
        pass


def freeze_start_up_objects() -> None:
    """Leave what start-up built (modules, mappers, the app: ~150k objects) out of later garbage collections.

    A full collection otherwise scans them all, stalling every request for 50-90 ms a few times a minute under
    load (bench/load.py); frozen, it scans only what requests have created since. Collected first, so only
    live objects are frozen and nothing cyclic is kept forever."""
    gc.collect()
    gc.freeze()


def _tune_malloc() -> None:
    """Keep transfer buffers from piling up in RSS, and the body's pieces from costing page faults (glibc only;
    elsewhere a no-op).

    One arena: worker threads (aiosqlite connections, hashing, compression) would otherwise each keep freed
    memory of their own; their work is native and allocates little, so they hardly wait for its lock.
    A fixed mmap threshold: glibc raises it after freeing a large block, after which MiB-sized transfer buffers
    come from the heap and fragment it instead of going back to the system when freed. It sits above what
    aiohttp joins a request body's buffered pieces into (uvloop reads ~250 KB at a time, readany() joins up to
    three): those come from the heap and are reused, where a fresh mapping each time cost a page fault per 4 KiB
    (~600k per GB uploaded). The trim threshold keeps the freed top of the heap for the next one."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, 768 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `eacct` console script."""
    _tune_malloc()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.run(settings, args)
    except errors.DomainError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except SettingError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
