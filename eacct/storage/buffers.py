"""Transfer buffers reused once nothing refers to them any more."""

from __future__ import annotations

import sys
import threading

__all__ = ["BufferPool"]


def _references_held_by_pool_alone() -> int:
    # What sys.getrefcount reports, in `_is_free`'s own pattern, for an object only a list refers to.
    return _reference_count([bytearray(1)], 0)


def _reference_count(buffers: list[bytearray], index: int) -> int:
    return sys.getrefcount(buffers[index])


_ONLY_THE_POOL = _references_held_by_pool_alone()


class BufferPool:
    """Bytearrays of at least a given size, handed out again once the pool holds the only reference to them.

    A fresh MiB for every transfer block is faulted in page by page and unmapped again when it is freed: about a
    second of CPU per GB, on the event loop's thread for request bodies (bench/transfer.py). Nobody gives a
    buffer back: it is free when nothing refers to it any more, so a buffer that anything still holds (a chunk
    cut from it on its way to compression, a transport still sending it, a view a caller kept) is never written
    again; the pool makes a new one instead. Thread-safe; a buffer's old contents are left in it.
    """

    def __init__(self, *, keep: int, largest: int | None = None, granule: int = 1) -> None:
        """Keep at most `keep` buffers (none larger than `largest`); new ones are rounded up to `granule` bytes."""
        self._keep = keep
        self._largest = largest
        self._granule = granule
        self._buffers: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        """A buffer of at least `size` bytes that nothing else refers to; the caller owns it until it drops it."""
        with self._lock:
            free = [index for index in range(len(self._buffers)) if self._is_free(index)]
            fitting = [index for index in free if len(self._buffers[index]) >= size]
            if fitting:
                return self._buffers[min(fitting, key=lambda index: len(self._buffers[index]))]
            buffer = bytearray(-(-max(size, 1) // self._granule) * self._granule)
            if self._largest is not None and len(buffer) > self._largest:
                return buffer
            if len(self._buffers) < self._keep:
                self._buffers.append(buffer)
            elif free:  # a free buffer too small for what is asked now makes room for this one
                self._buffers[free[0]] = buffer
            return buffer

    def _is_free(self, index: int) -> bool:
        return _reference_count(self._buffers, index) == _ONLY_THE_POOL

    def __len__(self) -> int:
        """How many buffers the pool keeps (free or in use)."""
        return len(self._buffers)
