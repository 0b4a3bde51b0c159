"""Scrubbing as a stream: JPEG, PNG and HEIF fed in pieces of any size give exactly what the
whole-file scrub gives, and the structural checks judge a stream like a whole file."""

from __future__ import annotations

import struct
import zlib

import pytest

from gateway.pipeline import HEAD_BYTES, PutContext, RequestInfo, UploadTooLargeForChecks
from plugins.formats import BY_NAME, scrubber_for
from plugins.scrub import heif
from plugins.scrub.base import MalformedImage, ScrubOptions, ScrubRefused
from plugins.scrub.bmff import read_boxes
from tests.scrub_corpus import dirty_file
from tests.scrub_corpus_bmff import heif_exif_first

STREAMED = {"phone.jpg": "jpeg", "dirty.png": "png"}
HEIF = ["pillow-heif.heic", "hand-built.heic"]


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("name", list(STREAMED))
@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 30])
def test_a_stream_in_pieces_is_scrubbed_as_the_whole_file(name: str, size: int) -> None:
    data = dirty_file(name).data
    scrubber = scrubber_for(STREAMED[name])
    whole = scrubber.clean(data, ScrubOptions())
    trailing: list[bytes] = []
    stream = scrubber.clean_stream(ScrubOptions(), trailing.append)
    assert stream is not None
    out = b"".join(stream.feed(piece) for piece in _pieces(data, size)) + stream.finish()
    assert out == whole.data
    assert b"".join(trailing) == whole.trailing and whole.trailing
    assert stream.result.removed == whole.removed
    assert stream.result.kept == whole.kept
    assert stream.result.changed


@pytest.mark.parametrize("name", HEIF)
@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 30])
def test_a_heif_in_pieces_is_scrubbed_as_the_whole_file(name: str, size: int) -> None:
    data = dirty_file(name).data
    scrubber = scrubber_for("heif")
    whole = scrubber.clean(data, ScrubOptions())
    stream = scrubber.clean_stream(ScrubOptions(), lambda _: None)
    assert stream is not None
    pieces = [stream.feed(piece) for piece in _pieces(data, size)]
    assert b"".join(pieces) + stream.finish() == whole.data
    assert stream.result.removed == whole.removed and "DateTimeOriginal" in whole.kept
    assert stream.result.kept == whole.kept
    # Streamed, not held whole: the head went out before the file's last piece.
    assert b"".join(pieces[:-1]).startswith(whole.data[:64]) or size >= len(data)


@pytest.mark.parametrize("name", list(STREAMED))
def test_a_clean_file_streams_through_unchanged(name: str) -> None:
    scrubber = scrubber_for(STREAMED[name])
    clean = scrubber.clean(dirty_file(name).data, ScrubOptions()).data
    stream = scrubber.clean_stream(ScrubOptions(), lambda _: None)
    assert stream is not None
    out = b"".join(stream.feed(piece) for piece in _pieces(clean, 1000)) + stream.finish()
    assert out == clean and not stream.result.changed


@pytest.mark.parametrize("name", list(STREAMED))
def test_a_cut_stream_is_refused_at_its_end(name: str) -> None:
    data = dirty_file(name).data
    fmt = STREAMED[name]
    cut = data[: len(data) // 2]
    stream = scrubber_for(fmt).clean_stream(ScrubOptions(), lambda _: None)
    assert stream is not None
    for piece in _pieces(cut, 100):
        stream.feed(piece)
    with pytest.raises(MalformedImage):
        stream.finish()
    structure = BY_NAME[fmt].structure_stream
    assert structure is not None
    check = structure(lambda size, mode: None)
    for piece in _pieces(cut, 3):
        assert check.feed(piece) == piece  # passed on unchanged
    with pytest.raises(MalformedImage):
        check.finish()


def test_the_structure_stream_reports_the_header_once() -> None:
    seen: list[tuple[tuple[int, int], str]] = []
    for name, fmt in STREAMED.items():
        structure = BY_NAME[fmt].structure_stream
        assert structure is not None
        check = structure(lambda size, mode: seen.append((size, mode)))
        for piece in _pieces(dirty_file(name).data, 5):
            check.feed(piece)
        check.finish()
    assert [mode for _, mode in seen] == ["RGB", "RGB"]


def test_metadata_after_the_first_scan_is_dropped_not_moved() -> None:
    """Decision (plugins/scrub/jpeg.py): a segment after the head was sent cannot move."""
    data = scrubber_for("jpeg").clean(dirty_file("phone.jpg").data, ScrubOptions()).data
    sos = data.index(b"\xff\xda")
    comment = b"\xff\xfe\x00\x07after"
    second_scan = data.index(b"\xff\xd9")
    planted = data[:second_scan] + comment + data[second_scan:]
    assert sos < second_scan
    result = scrubber_for("jpeg").clean(planted, ScrubOptions())
    assert b"after" not in result.data and result.removed == {"COM": 1}


def test_an_unknown_critical_png_chunk_is_still_refused() -> None:
    data = dirty_file("dirty.png").data
    chunk = b"ABCD" + b"x"
    planted = data[:33] + struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk))
    planted += data[33:]
    with pytest.raises(ScrubRefused):
        scrubber_for("png").clean(planted, ScrubOptions())


def test_the_structure_check_and_the_scrub_share_one_walk() -> None:
    """One marker walk per streamed JPEG: the scrub reads the walk the structural check
    made, so it gives the whole-file result, and a piece it alone got is refused."""
    data = dirty_file("phone.jpg").data
    whole = scrubber_for("jpeg").clean(data, ScrubOptions())
    row = BY_NAME["jpeg"]
    assert row.walk is not None and row.structure_stream is not None
    walk = row.walk()
    check = row.structure_stream(lambda size, mode: None, walk)
    trailing: list[bytes] = []
    stream = scrubber_for("jpeg").clean_stream(ScrubOptions(), trailing.append, walk)
    assert stream is not None
    out = b"".join(stream.feed(check.feed(piece)) for piece in _pieces(data, 4096))
    out += stream.feed(check.finish()) + stream.finish()
    assert out == whole.data and b"".join(trailing) == whole.trailing
    assert stream.result.removed == whole.removed

    walk = row.walk()
    check = row.structure_stream(lambda size, mode: None, walk)
    stream = scrubber_for("jpeg").clean_stream(ScrubOptions(), lambda _: None, walk)
    assert stream is not None
    stream.feed(check.feed(data[:4096]))
    check.feed(data[4096:8192])
    with pytest.raises(RuntimeError, match="different pieces"):
        stream.feed(data[8192:12288])


def test_the_recheck_takes_searched_coded_data_only_inside_a_scan() -> None:
    """Coded data handed to the re-check as searched is searched after all when the
    re-check is not inside a scan (here: the whole file, whose head it has not seen)."""
    clean = scrubber_for("jpeg").clean(dirty_file("phone.jpg").data, ScrubOptions()).data
    planted = clean[:-2] + b"\xff\xfe\x00\x07after" + clean[-2:]
    check = scrubber_for("jpeg").residue_stream(ScrubOptions())
    assert check is not None
    check.feed_scanned(planted)  # type: ignore[attr-defined]
    assert check.finish() == ["COM"]


class _PassOn:
    changed = False

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


def test_filters_share_a_parse_only_when_none_stands_between() -> None:
    ctx = PutContext(RequestInfo("r", None, "", "", "PUT"), "clinical", "/a.jpg", b"", "")
    first = ctx.shared("jpeg", object)
    ctx.filters.append(_PassOn())
    assert ctx.shared("jpeg", object) is first  # the next filter reads the same bytes
    ctx.filters.append(_PassOn())
    ctx.filters.append(_PassOn())  # another filter between: its bytes may differ
    assert ctx.shared("jpeg", object) is not first


def test_a_heif_streams_only_when_its_head_shows_how() -> None:
    """The meta before the mdat and the Exif item near the front: streamed.  The meta after
    the mdat: held whole (below limits.max_upload_bytes), and a stream that cannot go out
    before HEAD_LIMIT is refused 413, never passed on unscrubbed."""
    iphone = heif_exif_first(0)
    assert heif.streams_from(iphone[:HEAD_BYTES])
    ftyp, meta, mdat = (iphone[b.start : b.end] for b in read_boxes(iphone, 0, len(iphone)))
    assert not heif.streams_from(ftyp + mdat + meta)
    late = ftyp + mdat + meta + bytes(heif.HEAD_LIMIT)
    stream = scrubber_for("heif").clean_stream(ScrubOptions(), lambda _: None)
    assert stream is not None
    with pytest.raises(UploadTooLargeForChecks):
        for piece in _pieces(late, 65536):
            assert stream.feed(piece) == b""
