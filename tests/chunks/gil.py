"""Whether a native call gives up the GIL: how far a Python thread counts while it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def counted_while(call: Callable[[], object]) -> tuple[int, float]:
    """(increments a busy Python thread made during `call`, seconds `call` took). Holding the GIL, a call lets
    that thread run only at the interpreter's 5 ms switch points, if at all."""
    counted = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal counted
        while not stop.is_set():
            counted += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        time.sleep(0.05)
        before = counted
        started = time.perf_counter()
        call()
        seconds = time.perf_counter() - started
        return counted - before, seconds
    finally:
        stop.set()
        counter.join()
