"""Errors of the chunk format, with Chinese messages for people; the server maps them to its own error tree.

    ChunkFormatError          malformed manifest or delta (ValueError)
    └── ChunkChecksumError    a chunk's bytes do not match its sha256
"""

from __future__ import annotations

__all__ = ["ChunkChecksumError", "ChunkFormatError"]


class ChunkFormatError(ValueError):
    """Bytes that are not a well-formed manifest or delta upload."""


class ChunkChecksumError(ChunkFormatError):
    """A chunk whose bytes do not hash to the digest it was sent under."""
