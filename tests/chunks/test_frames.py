"""eacct/chunks/frames.py: a batch of chunks as zstd frames in one buffer, natively or with python-zstandard."""

from __future__ import annotations

import os
import random

import pytest
import zstandard

from eacct.chunks import frames
from eacct.chunks.frames import FrameCompressor, FrameDecompressor, FrameError, batch_bound
from tests.chunks.gil import counted_while


def pieces_of_every_kind() -> list:
    block = os.urandom(200_000)
    return [b"", b"x", block[:8192], bytearray(block[:100]), memoryview(block)[5:70_005], b"ab" * 65_536,
            memoryview(bytearray(block))[1:131_073]]


@pytest.fixture(params=["native", "python-zstandard"])
def implementation(request, monkeypatch):
    if request.param == "python-zstandard":
        monkeypatch.setattr(frames, "_NativeCompressor", None)
        monkeypatch.setattr(frames, "_NativeDecompressor", None)
    return request.param


@pytest.fixture
def compressor(implementation):
    return FrameCompressor(level=1)


def compressed(pieces) -> tuple[bytes, list[int]]:
    out = bytearray(batch_bound(sum(len(piece) for piece in pieces), len(pieces)))
    lengths = FrameCompressor(level=1).compress_into(pieces, out)
    return bytes(out[: sum(lengths)]), lengths


def frames_of(out, lengths) -> list[bytes]:
    found, position = [], 0
    for length in lengths:
        found.append(bytes(out[position : position + length]))
        position += length
    return found


def test_the_native_compressor_is_built_where_eacct_is_installed_with_libzstds_headers():
    """setup.py builds eacct.chunks._frames (optional); CI's machine has libzstd's headers, and the upload's speed
    depends on it, so CI checks that it was built."""
    assert frames.NATIVE


@pytest.mark.parametrize("count", [0, 1, 7, 120])
def test_each_piece_becomes_one_frame_that_python_zstandard_decompresses_back(compressor, count):
    pieces = (pieces_of_every_kind() * 20)[:count]
    out = bytearray(batch_bound(sum(len(piece) for piece in pieces), len(pieces)))
    lengths = compressor.compress_into(pieces, out)
    assert len(lengths) == count
    decompressor = zstandard.ZstdDecompressor()
    for piece, frame in zip(pieces, frames_of(out, lengths)):
        # The reader gives each frame its raw size as the most it may decompress to (eacct.netdisk.store.read).
        assert decompressor.decompress(frame, max_output_size=len(piece)) == bytes(piece)
        assert zstandard.frame_content_size(frame) == len(piece)


def test_repetitive_pieces_are_compressed(compressor):
    out = bytearray(batch_bound(1 << 20, 1))
    (length,) = compressor.compress_into([b"0123456789abcdef" * 65_536], out)
    assert length < 10_000


def test_the_bound_holds_for_pieces_that_do_not_compress(compressor):
    pieces = [os.urandom(size) for size in (1, 100, 8192, 65_535, 131_072, 131_073)]
    out = bytearray(batch_bound(sum(len(piece) for piece in pieces), len(pieces)))
    assert sum(compressor.compress_into(pieces, out)) <= len(out)


def test_a_buffer_too_small_for_the_bound_is_refused_before_anything_is_written():
    out = bytearray(10)
    with pytest.raises(ValueError):
        FrameCompressor(level=1).compress_into([os.urandom(1000)], out)
    assert out == bytearray(10)


@pytest.mark.parametrize("bad", [[1], ["text"], [None], [b"ok", object()]], ids=["int", "str", "none", "object"])
def test_a_piece_that_is_not_bytes_like_is_a_type_error(compressor, bad):
    with pytest.raises(TypeError):
        compressor.compress_into(bad, bytearray(1 << 16))


def test_a_read_only_output_is_refused():
    with pytest.raises((TypeError, BufferError)):
        FrameCompressor(level=1).compress_into([b"abc"], bytes(1 << 16))


def test_a_failed_call_keeps_no_view_of_the_pieces_or_the_output():
    """Views the failing call had taken are released: bytearrays among the pieces, and the output, can be resized."""
    piece, out = bytearray(b"resizable"), bytearray(1 << 16)
    with pytest.raises(TypeError):
        FrameCompressor(level=1).compress_into([piece, 1], out)
    piece.extend(b" still")
    out.extend(b"more")
    assert bytes(piece) == b"resizable still"


def test_other_threads_run_while_a_large_batch_is_compressed():
    """The native call gives up the GIL for the batch: a Python thread keeps counting meanwhile."""
    letters = random.Random(7)
    # Text-like bytes (random data zstd stores as it is, without work): 64 MiB at level 5, a few hundred
    # milliseconds (level 1 took under 50 ms on a fast machine: too short a window to count in).
    pieces = [bytes(letters.choices(b"abcdefghijklmnop 0123456789", k=128 * 1024)) for _ in range(8)] * 64
    out = bytearray(batch_bound(sum(len(piece) for piece in pieces), len(pieces)))
    compressor = FrameCompressor(level=5)
    during, seconds = counted_while(lambda: compressor.compress_into(pieces, out))
    assert seconds > 0.05 and during > 1000 * seconds, (during, seconds)


def test_a_level_zstd_does_not_know_is_refused():
    with pytest.raises(ValueError):
        FrameCompressor(level=1000)


@pytest.mark.parametrize("count", [0, 1, 7, 120])
def test_a_batch_of_frames_decompresses_back_one_after_another(implementation, count):
    pieces = (pieces_of_every_kind() * 20)[:count]
    data, lengths = compressed(pieces)
    out = bytearray(sum(len(piece) for piece in pieces))
    FrameDecompressor().decompress_into(memoryview(data), lengths, [len(piece) for piece in pieces], out)
    assert bytes(out) == b"".join(bytes(piece) for piece in pieces)


def test_a_frame_of_another_size_than_stored_is_a_frame_error(implementation):
    data, lengths = compressed([b"a" * 1000, b"b" * 2000])
    for sizes in ([1000, 1999], [1000, 2001], [999, 2000]):
        with pytest.raises(FrameError):
            FrameDecompressor().decompress_into(data, lengths, sizes, bytearray(4000))


def test_a_damaged_frame_is_a_frame_error(implementation):
    data, lengths = compressed([os.urandom(3000), b"c" * 5000])
    damaged = bytearray(data)
    damaged[lengths[0] + 2 : lengths[0] + 8] = b"\xff" * 6
    with pytest.raises(FrameError):
        FrameDecompressor().decompress_into(bytes(damaged), lengths, [3000, 5000], bytearray(8000))


def test_frames_longer_than_their_buffer_are_refused(implementation):
    data, lengths = compressed([os.urandom(3000)])
    with pytest.raises(ValueError):
        FrameDecompressor().decompress_into(data[:-5], lengths, [3000], bytearray(3000))


def test_other_threads_run_while_a_large_batch_is_decompressed():
    letters = random.Random(8)
    pieces = [bytes(letters.choices(b"abcdefghijklmnop 0123456789", k=128 * 1024)) for _ in range(8)] * 64
    data, lengths = compressed(pieces)
    out = bytearray(sum(len(piece) for piece in pieces))
    decompressor = FrameDecompressor()
    sizes = [len(piece) for piece in pieces]
    during, seconds = counted_while(lambda: decompressor.decompress_into(data, lengths, sizes, out))
    assert seconds > 0.01 and during > 1000 * seconds, (during, seconds)
