"""Deterministic AES-SIV encryption of path segments."""

from __future__ import annotations

import os
import re
import threading
import unicodedata

import pytest

from gateway.crypto.names import (
    MAX_PLAIN_LENGTH,
    MAX_STORED_LENGTH,
    NameCipher,
    NameDecryptError,
    NameTooLong,
)
from gateway.errors import ClindavError, InvalidPath

MASTER = bytes(range(32))
CIPHER = NameCipher.for_share(MASTER, "radiology")
SEGMENTS = [
    "a",
    "Patient 0042",
    "DSC_0001.JPG",
    "Ærø 北京 🩻 Ωμέγα.dcm",
    ".hidden",
    "..",
    "con",
    "trailing dot.",
    "x" * MAX_PLAIN_LENGTH,
]


@pytest.mark.parametrize("segment", SEGMENTS)
def test_round_trip(segment: str) -> None:
    stored = CIPHER.encrypt(segment)
    assert re.fullmatch("[a-z2-7]+", stored)
    assert 28 <= len(stored) <= MAX_STORED_LENGTH
    assert CIPHER.decrypt(stored) == segment


def test_deterministic_across_instances() -> None:
    again = NameCipher.for_share(MASTER, "radiology")
    assert [again.encrypt(s) for s in SEGMENTS] == [CIPHER.encrypt(s) for s in SEGMENTS]


def test_shares_and_master_keys_separate_names() -> None:
    names = {
        CIPHER.encrypt("Patient 0042"),
        NameCipher.for_share(MASTER, "cardiology").encrypt("Patient 0042"),
        NameCipher.for_share(os.urandom(32), "radiology").encrypt("Patient 0042"),
    }
    assert len(names) == 3
    with pytest.raises(NameDecryptError):
        NameCipher.for_share(MASTER, "cardiology").decrypt(CIPHER.encrypt("Patient 0042"))


def test_distinct_segments_give_distinct_names() -> None:
    assert CIPHER.encrypt("Scan") != CIPHER.encrypt("scan")


def test_unicode_is_normalized_to_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "Müller-Lüdenscheidt")
    assert nfd != "Müller-Lüdenscheidt"
    assert CIPHER.encrypt(nfd) == CIPHER.encrypt("Müller-Lüdenscheidt")
    assert CIPHER.decrypt(CIPHER.encrypt(nfd)) == "Müller-Lüdenscheidt"


def test_decoding_ignores_letter_case() -> None:
    stored = CIPHER.encrypt("Patient 0042")
    for variant in (stored.upper(), stored.capitalize(), stored.swapcase()):
        assert CIPHER.decrypt(variant) == "Patient 0042"


def test_max_length_is_what_fits_in_255() -> None:
    assert MAX_PLAIN_LENGTH == NameCipher.max_plain_length == 143
    assert len(CIPHER.encrypt("x" * MAX_PLAIN_LENGTH)) == 255
    assert len(CIPHER.encrypt("é" * (MAX_PLAIN_LENGTH // 2))) <= 255  # 2 bytes each


@pytest.mark.parametrize("segment", ["x" * (MAX_PLAIN_LENGTH + 1), "é" * 72, "🩻" * 36])
def test_too_long_segment_is_refused(segment: str) -> None:
    with pytest.raises(NameTooLong) as caught:
        CIPHER.encrypt(segment)
    error = caught.value
    assert isinstance(error, ClindavError)
    assert (error.status, error.code) == (414, "name-too-long")
    assert segment not in error.detail


def test_empty_segment_is_invalid_path() -> None:
    with pytest.raises(InvalidPath):
        CIPHER.encrypt("")


def test_foreign_and_damaged_names_are_rejected() -> None:
    stored = CIPHER.encrypt("Patient 0042")
    flipped = stored[:5] + ("a" if stored[5] != "a" else "b") + stored[6:]
    # The last character of a 28-character name carries 4 padding bits.
    short = CIPHER.encrypt("a")
    assert len(short) == 28
    non_canonical = (
        short[:-1]
        + "abcdefghijklmnopqrstuvwxyz234567"[
            "abcdefghijklmnopqrstuvwxyz234567".index(short[-1]) ^ 1
        ]
    )
    foreign = [
        "",
        "DSC_0001.JPG",
        "desktop.ini",
        "aaaa",
        "a" * 28,
        "a" * 256,
        flipped,
        stored + "a",
        stored[:-1],
        stored + "====",
        non_canonical,
        "ä" * 30,
    ]
    for name in foreign:
        with pytest.raises(NameDecryptError) as caught:
            CIPHER.decrypt(name)
        assert caught.value.code == "name-decrypt-failed"
    assert CIPHER.decrypt_many(foreign) == [None] * len(foreign)


def test_decrypt_many_keeps_order_and_marks_foreign() -> None:
    listing = [CIPHER.encrypt("b"), "Thumbs.db", CIPHER.encrypt("a").upper()]
    assert CIPHER.decrypt_many(listing) == ["b", None, "a"]
    assert CIPHER.decrypt_many(iter(listing)) == ["b", None, "a"]


def test_bounded_cache_is_per_instance_and_thread_safe() -> None:
    cipher = NameCipher.for_share(MASTER, "radiology")
    cipher_small = NameCipher(bytes(64), cache_size=4)
    names = [f"file-{i:04d}.dcm" for i in range(300)]
    stored = [cipher.encrypt(n) for n in names]
    results: list[list[str | None]] = []

    def worker() -> None:
        for _ in range(5):
            results.append(cipher.decrypt_many(stored))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40 and all(r == names for r in results)
    small_names = [cipher_small.encrypt(n) for n in names[:20]]
    assert cipher_small.decrypt_many(small_names) == names[:20]
    assert cipher_small.decrypt_many(small_names) == names[:20]
    assert cipher_small._lookup.cache_info().currsize == 4  # bounded
    assert cipher._lookup.cache_info().hits >= 300  # listings repeat


def test_bad_keys_are_value_errors() -> None:
    with pytest.raises(ValueError):
        NameCipher(bytes(32))
    with pytest.raises(ValueError):
        NameCipher.for_share(bytes(64), "radiology")
