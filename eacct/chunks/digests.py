"""sha256 digests of many chunks at once: one native call without the GIL (eacct.chunks._native), or hashlib
where the extension is not built."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

try:
    from eacct.chunks._native import sha256_many as _native_sha256_many, sha256_spans as _native_sha256_spans
except ImportError:  # no compiler or OpenSSL headers where eacct was installed
    _native_sha256_many = _native_sha256_spans = None

__all__ = ["NATIVE", "sha256_many", "sha256_spans"]

NATIVE = _native_sha256_many is not None


def sha256_many(pieces: Sequence[bytes | bytearray | memoryview]) -> list[bytes]:
    """The sha256 digest of each piece, in order. Natively, the whole batch takes the GIL once instead of once
    per piece, which is what keeps an upload's hashing thread from stalling the event loop."""
    if _native_sha256_many is not None:
        return _native_sha256_many(pieces)
    return [hashlib.sha256(piece).digest() for piece in pieces]


def sha256_spans(data: bytes | bytearray | memoryview, sizes: Sequence[int]) -> bytes:
    """The digests of the consecutive spans of `data`, `sizes` bytes each from its start, concatenated (32 bytes a
    span): a decoded block's chunks verified without a Python object per chunk."""
    if _native_sha256_spans is not None:
        return _native_sha256_spans(data, sizes)
    digests = bytearray()
    offset = 0
    with memoryview(data) as view:
        if sum(sizes) > len(view) or any(size < 0 for size in sizes):
            raise ValueError("sha256_spans(): the sizes must be non-negative and fit the buffer")
        for size in sizes:
            digests += hashlib.sha256(view[offset : offset + size]).digest()
            offset += size
    return bytes(digests)
