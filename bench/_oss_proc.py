"""Run tests/oss_server.py's fake OSS in a process of its own (for `bench/transfer.py --storage oss`).

Prints `READY <base url>` once listening on 127.0.0.1, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from bench._harness import ROOT


async def main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.oss_server import FakeOssServer

    server = FakeOssServer(args.key_id, args.secret, args.bucket)
    base = await server.start("127.0.0.1", args.port)
    print(f"READY {base}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret", required=True)
    asyncio.run(main(parser.parse_args()))
