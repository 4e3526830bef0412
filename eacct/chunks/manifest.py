"""Manifests: a version's chunk list in file order, 36 bytes an entry (sha256, raw size; big-endian).

The store keeps manifests in this form, the delta format copies runs of them, and the desktop client remembers
the manifest of the version each local year came from.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from eacct.chunks.errors import ChunkFormatError

__all__ = ["ENTRY", "decode_manifest", "encode_manifest", "iter_manifest"]

ENTRY = struct.Struct(">32sI")


def encode_manifest(entries: Iterable[tuple[bytes, int]]) -> bytes:
    """The manifest bytes of (digest, raw size) entries."""
    return b"".join(ENTRY.pack(digest, size) for digest, size in entries)


def iter_manifest(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(digest, raw size) of each chunk of a manifest, in file order."""
    return ENTRY.iter_unpack(data)


def decode_manifest(data: bytes) -> list[tuple[bytes, int]]:
    """The entries of a manifest, refusing bytes that are not whole entries."""
    if len(data) % ENTRY.size:
        raise ChunkFormatError("数据块清单的长度不正确")
    return list(ENTRY.iter_unpack(data))
