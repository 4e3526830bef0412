"""eacct/chunks/digests.py: sha256 of many chunks in one native call, or with hashlib where it is not built."""

from __future__ import annotations

import hashlib
import os

import pytest

from eacct.chunks import digests
from tests.chunks.gil import counted_while


def pieces_of_every_kind() -> list:
    block = os.urandom(300_000)
    return [b"", b"x", block[:8192], bytearray(block[:100]), memoryview(block)[5:70_005], block,
            memoryview(bytearray(block))[1:]]


@pytest.fixture(params=["native", "hashlib"])
def implementation(request, monkeypatch):
    if request.param == "hashlib":
        monkeypatch.setattr(digests, "_native_sha256_many", None)
        monkeypatch.setattr(digests, "_native_sha256_spans", None)
    return request.param


def test_the_native_digests_are_built_where_eacct_is_installed_with_a_compiler_and_openssl():
    """setup.py builds eacct.chunks._native (optional, so an install without a compiler still works); CI's
    machine has both, and the upload's speed depends on it, so CI checks that it was built."""
    assert digests.NATIVE


@pytest.mark.parametrize("count", [0, 1, 3, 200])
def test_sha256_many_gives_each_pieces_sha256_in_order(implementation, count):
    pieces = (pieces_of_every_kind() * 40)[:count]
    assert digests.sha256_many(pieces) == [hashlib.sha256(piece).digest() for piece in pieces]


def test_sha256_many_takes_a_tuple_or_a_list(implementation):
    assert digests.sha256_many((b"a", b"b")) == [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]


@pytest.mark.parametrize("bad", [[1], ["text"], [None], [b"ok", object()]], ids=["int", "str", "none", "object"])
def test_a_piece_that_is_not_bytes_like_is_a_type_error(implementation, bad):
    with pytest.raises(TypeError):
        digests.sha256_many(bad)


def test_a_non_contiguous_view_is_refused_not_hashed_wrongly():
    strided = memoryview(b"0123456789")[::2]
    with pytest.raises((BufferError, TypeError, ValueError)):
        digests.sha256_many([strided])


def test_a_failed_call_keeps_no_view_of_the_pieces_before_it():
    """The pieces a failing call had already taken are released: a bytearray among them can be resized."""
    buffer = bytearray(b"resizable")
    with pytest.raises(TypeError):
        digests.sha256_many([buffer, 1])
    buffer.extend(b" still")
    assert bytes(buffer) == b"resizable still"


def test_other_threads_run_while_a_large_batch_is_hashed():
    """The native call gives up the GIL for the batch: a Python thread keeps counting meanwhile."""
    pieces = [os.urandom(1 << 20)] * 256  # 256 MiB: a few hundred milliseconds of hashing
    during, seconds = counted_while(lambda: digests.sha256_many(pieces))
    assert seconds > 0.05 and during > 1000 * seconds, (during, seconds)


@pytest.mark.parametrize("sizes", [[], [0], [1], [8192, 0, 100, 70_000], [300_000], [100] * 3000],
                         ids=["none", "empty-span", "one-byte", "mixed", "whole-buffer", "many"])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_sha256_spans_gives_each_consecutive_spans_sha256_concatenated(implementation, sizes, kind):
    data = os.urandom(300_000)
    expected, offset = b"", 0
    for size in sizes:
        expected += hashlib.sha256(data[offset : offset + size]).digest()
        offset += size
    assert digests.sha256_spans(kind(data), sizes) == expected


@pytest.mark.parametrize("sizes", [[300_001], [200_000, 100_001], [-1], [10, -5, 20]],
                         ids=["past-the-end", "sum-past-the-end", "negative", "negative-among-others"])
def test_sha256_spans_that_do_not_fit_the_buffer_are_a_value_error(implementation, sizes):
    with pytest.raises(ValueError):
        digests.sha256_spans(bytes(300_000), sizes)


def test_other_threads_run_while_a_large_buffer_is_hashed_in_spans():
    """Like sha256_many, the spans are hashed without the GIL."""
    data = os.urandom(1 << 20) * 256
    during, seconds = counted_while(lambda: digests.sha256_spans(data, [8192] * (len(data) // 8192)))
    assert seconds > 0.05 and during > 1000 * seconds, (during, seconds)
