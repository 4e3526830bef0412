"""eacct/chunks/cdc.py: FastCDC cuts, natively without the GIL or with the fastcdc package, always the same."""

from __future__ import annotations

import io
import os
import random
import tarfile

import pytest
from fastcdc import fastcdc

from eacct.chunks import cdc
from eacct.chunks.chunker import DEFAULT_PARAMS, ChunkerParams, chunk_bytes
from tests.chunks.gil import counted_while

PARAMS = [(16384, 32768, 131072), (64, 256, 1024), (2048, 8192, 65536), (4096, 4096, 4096), (100, 300, 5000)]


def package_lengths(data, minimum, average, maximum) -> list[int]:
    return [chunk.length for chunk in fastcdc(data, minimum, average, maximum, fat=False)]


def test_the_native_cut_is_built_where_eacct_is_installed_with_a_compiler_and_openssl():
    assert cdc.NATIVE


@pytest.mark.parametrize("minimum,average,maximum", PARAMS)
@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 16_383, 16_384, 16_385, 131_072, 131_073, 1_000_003])
def test_the_native_cuts_are_the_fastcdc_packages(size, minimum, average, maximum):
    data = random.Random(size * 31 + minimum).randbytes(size)
    assert cdc.cdc_lengths(data, minimum, average, maximum) == package_lengths(data, minimum, average, maximum)


@pytest.mark.parametrize("kind", ["zeros", "repeating", "text"])
def test_low_entropy_data_is_cut_as_the_package_cuts_it(kind):
    data = {"zeros": bytes(500_000), "repeating": b"abc" * 200_000,
            "text": "记账凭证 2018-03 借: 管理费用 贷: 银行存款\n".encode() * 8000}[kind]
    assert cdc.cdc_lengths(memoryview(data)[3:], 16384, 32768, 131072) == package_lengths(
        memoryview(data)[3:], 16384, 32768, 131072)


def test_the_chunker_cuts_a_year_the_same_with_and_without_the_native_cut(monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, size in (("attachments.bin", 700_000), ("notes.txt", 50_000), ("tiny", 10)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(random.Random(size).randbytes(size)))
    year = buffer.getvalue() + os.urandom(300_000)  # and a tail that is not tar at all
    small = ChunkerParams(page_group_bytes=4096, cdc_min=1024, cdc_avg=4096, cdc_max=16384, max_chunk=65536)
    native = [chunk_bytes(year, params) for params in (DEFAULT_PARAMS, small)]
    monkeypatch.setattr(cdc, "_native_cdc_lengths", None)
    assert [chunk_bytes(year, params) for params in (DEFAULT_PARAMS, small)] == native


def test_a_bad_gear_table_or_bounds_are_a_value_error():
    native = cdc._native_cdc_lengths
    with pytest.raises(ValueError):
        native(b"data", 64, 1024, 0, 1, 1, b"short")
    with pytest.raises(ValueError):
        native(b"data", 0, 1024, 0, 1, 1, cdc._GEAR_TABLE)
    with pytest.raises(ValueError):
        native(b"data", 2048, 1024, 0, 1, 1, cdc._GEAR_TABLE)
    with pytest.raises(TypeError):
        native("text", 64, 1024, 0, 1, 1, cdc._GEAR_TABLE)


def test_other_threads_run_while_a_large_block_is_cut():
    data = os.urandom(256 << 20)
    # Scanned three times over: a few hundred milliseconds even where one scan takes under 50 ms.
    during, seconds = counted_while(lambda: [cdc.cdc_lengths(data, 16384, 32768, 131072) for _ in range(3)])
    assert seconds > 0.05 and during > 1000 * seconds, (during, seconds)
