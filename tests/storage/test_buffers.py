"""BufferPool: a buffer is handed out again only once nothing but the pool refers to it."""

from __future__ import annotations

import threading
import time

from eacct.storage.buffers import BufferPool


def test_a_buffer_nothing_refers_to_any_more_is_handed_out_again():
    pool = BufferPool(keep=2)
    first = pool.take(1000)
    first_id = id(first)
    del first
    again = pool.take(1000)
    assert id(again) == first_id and len(pool) == 1


def test_a_buffer_a_view_still_refers_to_is_never_written_again():
    pool = BufferPool(keep=4)
    buffer = pool.take(16)
    buffer[:] = b"A" * 16
    kept = memoryview(buffer)[4:8]  # a chunk cut from a block, still on its way somewhere
    del buffer
    for _ in range(3):
        other = pool.take(16)
        other[:] = b"B" * len(other)
        del other
    assert kept.tobytes() == b"AAAA"
    kept.release()


def test_a_buffer_held_directly_is_never_handed_out_twice():
    pool = BufferPool(keep=4)
    held = [pool.take(64) for _ in range(6)]
    assert len({id(buffer) for buffer in held}) == 6
    assert len(pool) == 4  # beyond `keep`, buffers are the caller's alone
    held.clear()
    assert len({id(pool.take(64)) for _ in range(3)}) == 1


def test_a_buffer_is_at_least_the_size_asked_rounded_to_the_granule_and_the_smallest_free_one_fits():
    pool = BufferPool(keep=3, granule=256)
    small, large = pool.take(100), pool.take(600)
    assert (len(small), len(large)) == (256, 768)
    small_id, large_id = id(small), id(large)
    del small, large
    assert id(pool.take(200)) == small_id
    assert id(pool.take(300)) == large_id


def test_a_free_buffer_too_small_makes_room_for_a_larger_one_and_the_largest_are_not_kept():
    pool = BufferPool(keep=1, largest=4096)
    pool.take(10)
    bigger = pool.take(2000)
    bigger_id = id(bigger)
    del bigger
    assert len(pool) == 1 and id(pool.take(2000)) == bigger_id
    huge = pool.take(10_000)
    assert len(huge) == 10_000 and len(pool) == 1


def test_threads_taking_at_once_never_share_a_buffer():
    pool = BufferPool(keep=4)
    clashes = []
    barrier = threading.Barrier(4)

    def work(mark: int) -> None:
        barrier.wait()
        for _ in range(500):
            buffer = pool.take(64)
            buffer[:8] = bytes([mark]) * 8
            time.sleep(0)  # other threads run while the buffer is held
            if bytes(buffer[:8]) != bytes([mark]) * 8:
                clashes.append(mark)
            del buffer

    threads = [threading.Thread(target=work, args=(mark,)) for mark in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == []
