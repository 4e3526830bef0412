"""zstd frames of a batch of chunks, one after another in one buffer: what an upload spools into a pack.

eacct.chunks._frames does it in C with one GIL hand-off per batch (setup.py builds it where libzstd's headers
are); without it, python-zstandard compresses chunk by chunk. Either way each chunk is a plain zstd frame with
its content size, which python-zstandard's decompressor reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import zstandard

try:
    from eacct.chunks._frames import Compressor as _NativeCompressor
except ImportError:  # built without libzstd's headers
    _NativeCompressor = None

__all__ = ["NATIVE", "FrameCompressor", "batch_bound"]

NATIVE = _NativeCompressor is not None
# zstd's ZSTD_COMPRESSBOUND: a frame of n raw bytes takes at most n + n/256 bytes, plus up to 64 for small inputs.
_SMALL_INPUT = 128 * 1024


def batch_bound(total: int, count: int) -> int:
    """The most bytes the frames of `count` chunks of `total` raw bytes in all can take."""
    return total + (total >> 8) + count * (_SMALL_INPUT >> 11)


class FrameCompressor:
    """A zstd context writing a batch of chunks as frames into a caller's buffer; one call at a time."""

    def __init__(self, level: int) -> None:
        self._native = _NativeCompressor(level) if _NativeCompressor is not None else None
        self._fallback = None if self._native is not None else zstandard.ZstdCompressor(level=level)

    def compress_into(self, pieces: Sequence[bytes | memoryview], out: bytearray | memoryview) -> list[int]:
        """Write one frame per piece from the start of `out` (which holds `batch_bound` of them); their lengths."""
        if self._native is not None:
            return self._native.compress_into(pieces, out)
        lengths = []
        position = 0
        with memoryview(out) as target:
            for piece in pieces:
                frame = self._fallback.compress(piece)
                target[position : position + len(frame)] = frame
                position += len(frame)
                lengths.append(len(frame))
        return lengths
