"""sha256 digests of many chunks at once: one native call without the GIL (eacct.chunks._native), or hashlib
where the extension is not built."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

try:
    from eacct.chunks._native import sha256_many as _native_sha256_many
except ImportError:  # no compiler or OpenSSL headers where eacct was installed
    _native_sha256_many = None

__all__ = ["NATIVE", "sha256_many"]

NATIVE = _native_sha256_many is not None


def sha256_many(pieces: Sequence[bytes | bytearray | memoryview]) -> list[bytes]:
    """The sha256 digest of each piece, in order. Natively, the whole batch takes the GIL once instead of once
    per piece, which is what keeps an upload's hashing thread from stalling the event loop."""
    if _native_sha256_many is not None:
        return _native_sha256_many(pieces)
    return [hashlib.sha256(piece).digest() for piece in pieces]
