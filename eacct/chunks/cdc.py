"""FastCDC cut points, exactly as the fastcdc package computes them: natively over a whole block without the
GIL (eacct.chunks._native), or with the package itself where the extension is not built."""

from __future__ import annotations

import functools
import struct

from fastcdc import fastcdc as _fastcdc
from fastcdc.fastcdc_py import GEAR, center_size, logarithm2, mask

try:
    from eacct.chunks._native import cdc_lengths as _native_cdc_lengths
except ImportError:  # no compiler or OpenSSL headers where eacct was installed
    _native_cdc_lengths = None

__all__ = ["NATIVE", "cdc_lengths"]

NATIVE = _native_cdc_lengths is not None
# The package's gear table, as the native scan reads it: 256 native-endian uint32.
_GEAR_TABLE = struct.pack("=256I", *GEAR)


@functools.lru_cache(maxsize=8)
def _masks(minimum: int, average: int, maximum: int) -> tuple[int, int, int]:
    """The package's derived parameters: the normalisation point and the strict and loose masks."""
    bits = logarithm2(average)
    return center_size(average, minimum, maximum), mask(bits + 1), mask(bits - 1)


def cdc_lengths(data: bytes | bytearray | memoryview, minimum: int, average: int, maximum: int) -> list[int]:
    """The lengths of the FastCDC chunks that cover `data`, in order (the last may be cut short by its end)."""
    if _native_cdc_lengths is None:
        return [chunk.length for chunk in _fastcdc(data, minimum, average, maximum, fat=False)]
    center, mask_strict, mask_loose = _masks(minimum, average, maximum)
    return _native_cdc_lengths(data, minimum, maximum, center, mask_strict, mask_loose, _GEAR_TABLE)
