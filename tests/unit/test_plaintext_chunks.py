"""The reader GET serves small files through (gateway/storage/content.py ``_PlaintextChunks``):
the same bytes as a plain in-memory file for any seek and read, and whole chunks
handed out without a copy."""

from __future__ import annotations

import io
import random

from gateway.storage.content import _PlaintextChunks


def _chunks(rng: random.Random, sizes: list[int]) -> list[bytes]:
    return [rng.randbytes(n) for n in sizes]


def test_random_seeks_and_reads_match_a_plain_file() -> None:
    rng = random.Random(7)
    for sizes in ([0], [5], [65536, 65536, 17], [1, 2, 3, 4], [65536] * 8 + [1000]):
        chunks = _chunks(rng, sizes)
        reader, plain = _PlaintextChunks(chunks), io.BytesIO(b"".join(chunks))
        total = sum(sizes)
        for _ in range(200):
            where = rng.randrange(total + 3)
            assert reader.seek(where) == plain.seek(where)
            want = rng.choice([-1, 0, 1, 7, 4096, 65536, 300_000])
            got = b""
            # A read may return less than asked (one chunk at most): read on to compare.
            while len(got) < (want if want >= 0 else total):
                piece = reader.read(want - len(got) if want >= 0 else -1)
                if not piece:
                    break
                got += piece
            expected = plain.read(want)
            assert got == expected, (sizes, where, want)
            assert reader.tell() == plain.tell()


def test_reads_hand_out_whole_chunks() -> None:
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 65536, b"d" * 10]
    reader = _PlaintextChunks(chunks)
    assert reader.read(65536 * 2 + 100) == chunks[0] + chunks[1]  # whole chunks that fit
    assert reader.read(100_000) is chunks[2]  # one chunk: the object itself, no copy
    assert reader.read(5) == b"ddddd"
    assert reader.read() == b"ddddd"
    assert reader.read(1 << 20) == b""
