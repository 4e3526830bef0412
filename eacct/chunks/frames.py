"""zstd frames of a batch of chunks, one after another in one buffer: what an upload spools into a pack, and what
a download decompresses back.

eacct.chunks._frames does both in C with one GIL hand-off per batch (setup.py builds it where libzstd's headers
are); without it, python-zstandard works chunk by chunk. Either way each chunk is a plain zstd frame with its
content size.
"""

from __future__ import annotations

from collections.abc import Sequence

import zstandard

try:
    from eacct.chunks._frames import Compressor as _NativeCompressor, Decompressor as _NativeDecompressor
except ImportError:  # built without libzstd's headers
    _NativeCompressor = _NativeDecompressor = None

__all__ = ["NATIVE", "FrameCompressor", "FrameDecompressor", "FrameError", "batch_bound"]

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


class FrameError(ValueError):
    """A frame that does not decompress, or not to the size it was stored with."""


class FrameDecompressor:
    """A zstd context reading a batch of frames back into a caller's buffer; one call at a time."""

    def __init__(self) -> None:
        self._native = _NativeDecompressor() if _NativeDecompressor is not None else None
        self._fallback = None if self._native is not None else zstandard.ZstdDecompressor()

    def decompress_into(self, frames: bytes | memoryview, frame_lengths: Sequence[int], raw_sizes: Sequence[int],
                        out: bytearray | memoryview) -> None:
        """Decompress the frames lying one after another in `frames` into `out`, one after another; FrameError
        unless each gives exactly its raw size."""
        if self._native is not None:
            try:
                self._native.decompress_into(frames, frame_lengths, raw_sizes, out)
            except ValueError as exc:
                raise FrameError(str(exc)) from exc
            return
        read = written = 0
        with memoryview(frames) as source, memoryview(out) as target:
            for index, (length, size) in enumerate(zip(frame_lengths, raw_sizes, strict=True)):
                try:
                    raw = self._fallback.decompress(source[read : read + length], max_output_size=size)
                except zstandard.ZstdError as exc:
                    raise FrameError(f"frame {index} does not decompress: {exc}") from exc
                if len(raw) != size:
                    raise FrameError(f"frame {index} holds {len(raw)} bytes, not {size}")
                target[written : written + size] = raw
                read += length
                written += size
