"""Bad input raises only the documented errors: MalformedImage or ScrubRefused."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from plugins.formats import scrubber_for
from plugins.scrub.base import MalformedImage, ScrubOptions, ScrubRefused, ScrubResult
from plugins.scrub.jpeg import JpegScrubber
from tests.scrub_corpus import NAMES, DirtyFile
from tests.scrub_corpus_bmff import box, full_box
from tests.scrub_corpus_images import png_chunk, riff, riff_chunks

DOCUMENTED = (MalformedImage, ScrubRefused)
FORMATS = ("jpeg", "png", "tiff", "webp", "gif", "heif", "isobmff-video")


def clean(fmt: str, data: bytes, **options: object) -> None:
    scrubber_for(fmt).clean(data, ScrubOptions(**options))  # type: ignore[arg-type]


def tiff_blob(entries: list[tuple[int, int, int, int]], next_ifd: int = 0, at: int = 8) -> bytes:
    """A little-endian TIFF structure: one IFD at ``at`` with raw entries."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", at) + bytes(at - 8) + ifd + struct.pack("<I", next_ifd)


BAD_EXIF = {
    "ifd-loop": tiff_blob([(0x0112, 3, 1, 6)], next_ifd=8),
    "exif-pointer-loop": tiff_blob([(0x8769, 4, 1, 8)]),
    "ifd-offset-outside": b"II*\x00" + struct.pack("<I", 0xFFFFFF00),
    "huge-entry-count": b"II*\x00" + struct.pack("<IH", 8, 0xFFFF) + bytes(64),
    "huge-tag-count": tiff_blob([(0x010F, 2, 0x7FFFFFFF, 8)]),
    "value-outside": tiff_blob([(0x010F, 2, 100, 0xFFFF0000)]),
    "unknown-type": tiff_blob([(0x010F, 99, 1, 0)]),
    "not-tiff": b"\x00" * 32,
}


def small_jpeg(exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(
        out, "JPEG", **({"exif": b"Exif\x00\x00" + exif} if exif else {})
    )
    return out.getvalue()


def small_png(*extra: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    data = out.getvalue()
    return data[:33] + b"".join(extra) + data[33:]


@pytest.mark.parametrize("case", sorted(BAD_EXIF))
def test_bad_exif_structures_are_malformed(case: str) -> None:
    blob = BAD_EXIF[case]
    with pytest.raises(MalformedImage):
        clean("jpeg", small_jpeg(blob))
    with pytest.raises(MalformedImage):
        clean("png", small_png(png_chunk(b"eXIf", blob)))


def test_tiff_ifd_loop_and_bad_offsets(corpus: dict[str, DirtyFile]) -> None:
    data = corpus["scan.tif"].data
    (ifd0,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd0 : ifd0 + 2])
    next_at = ifd0 + 2 + 12 * n
    loop = data[:next_at] + struct.pack("<I", ifd0) + data[next_at + 4 :]
    outside = data[:4] + struct.pack("<I", len(data) + 100) + data[8:]
    for bad in (loop, outside):
        with pytest.raises(MalformedImage):
            clean("tiff", bad)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    with pytest.raises(DOCUMENTED):
        clean(fmt, rng.randbytes(rng.choice([0, 1, 7, 100, 5000])))


@pytest.mark.parametrize("name", NAMES)
def test_truncated_files(name: str, corpus: dict[str, DirtyFile]) -> None:
    data = corpus[name].data
    for cut in (0, 4, 12, len(data) // 3, len(data) // 2):
        with pytest.raises(DOCUMENTED):
            clean(corpus[name].format, data[:cut])


@pytest.mark.parametrize("name", NAMES)
def test_decompression_bombs_by_policy(name: str, corpus: dict[str, DirtyFile]) -> None:
    with pytest.raises(MalformedImage, match="max_pixels"):
        clean(corpus[name].format, corpus[name].data, max_pixels=100)


def test_png_bomb_header() -> None:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + small_png()[33:]
    with pytest.raises(MalformedImage, match="decompression bomb"):
        clean("png", data)


BOMB_TIFF = tiff_blob(
    [
        (256, 4, 1, 10_000),
        (257, 4, 1, 9_500),
        (258, 3, 1, 1),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, 9_500),
        (279, 4, 1, 100),
    ],
    at=200,
)


def test_pillow_limit_applies_even_if_policy_allows_more() -> None:
    with pytest.raises(MalformedImage, match="Pillow's limit"):
        clean("tiff", BOMB_TIFF, max_pixels=10**9)


def test_importing_the_scrubbers_makes_the_bomb_warning_an_error(tmp_path: Path) -> None:
    """Checked in a fresh interpreter: pytest resets warning filters around each test."""
    (tmp_path / "bomb.tif").write_bytes(BOMB_TIFF)
    script = (
        "import plugins.scrub.base\n"
        "from PIL import Image\n"
        "try:\n"
        f"    Image.open({str(tmp_path / 'bomb.tif')!r})\n"
        "except Image.DecompressionBombWarning:\n"
        "    print('raised')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[3],
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == "raised"


def test_png_bad_crc() -> None:
    data = bytearray(small_png())
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    with pytest.raises(MalformedImage, match="CRC"):
        clean("png", bytes(data))
    idat = bytearray(small_png())
    idat[idat.index(b"IDAT") + 6] ^= 0x01
    with pytest.raises(MalformedImage, match="CRC"):
        clean("png", bytes(idat))


def test_png_unknown_critical_chunk_is_refused() -> None:
    with pytest.raises(ScrubRefused):
        clean("png", small_png(png_chunk(b"CgBI", b"\x50\x00\x20\x06")))


@pytest.mark.parametrize("length", [0, 1, 0xFFFF])
def test_jpeg_garbage_segment_lengths(length: int) -> None:
    data = bytearray(small_jpeg())
    at = data.index(b"\xff\xdb")  # DQT
    data[at + 2 : at + 4] = struct.pack(">H", length)
    with pytest.raises(MalformedImage):
        clean("jpeg", bytes(data))


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        (lambda d: d[:2] + b"junk" + d[2:], MalformedImage),  # stray bytes before a marker
        (lambda d: d[:2] + b"\xff\xf7\x00\x04ab" + d[2:], ScrubRefused),  # JPEG-LS SOF55
        (lambda d: d.replace(b"\xff\xdb\x00\x43", b"\xff\xdb\x00\x45", 1), MalformedImage),
        (lambda d: d[:-2], MalformedImage),  # no EOI
    ],
    ids=["stray-bytes", "unknown-marker", "dqt-spare-bytes", "no-eoi"],
)
def test_jpeg_structure(patch: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        clean("jpeg", patch(small_jpeg()))  # type: ignore[operator]


def test_webp_chunk_overrun(corpus: dict[str, DirtyFile]) -> None:
    chunks = riff_chunks(corpus["still.webp"].data)
    data = bytearray(riff(chunks))
    data[16:20] = struct.pack("<I", len(data))  # first chunk claims the whole file
    with pytest.raises(MalformedImage):
        clean("webp", bytes(data))


def test_gif_without_trailer(corpus: dict[str, DirtyFile]) -> None:
    data = corpus["animated.gif"].data
    with pytest.raises(MalformedImage):
        clean("gif", data[: data.rindex(b"\x3b")])


def test_heif_image_sequence_is_refused(corpus: dict[str, DirtyFile]) -> None:
    with pytest.raises(ScrubRefused):
        clean("heif", corpus["hand-built.heic"].data + box(b"moov", box(b"mvhd")))


def test_video_fragments_and_external_data_are_refused(corpus: dict[str, DirtyFile]) -> None:
    data = corpus["phone.mp4"].data
    with pytest.raises(ScrubRefused):
        clean("isobmff-video", data + box(b"moof", box(b"mfhd", bytes(8))))
    external = data.replace(full_box(b"url ", 0, 1), full_box(b"url ", 0, 0), 1)
    with pytest.raises(ScrubRefused):
        clean("isobmff-video", external)


def test_video_sample_outside_mdat(corpus: dict[str, DirtyFile]) -> None:
    data = bytearray(corpus["phone.mp4"].data)
    at = data.index(b"stco") + 12
    data[at : at + 4] = struct.pack(">I", 0xFFFF0000)
    with pytest.raises(MalformedImage):
        clean("isobmff-video", bytes(data))


class _Passthrough(JpegScrubber):
    """A scrubber that forgets to scrub: clean() must catch it."""

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        return ScrubResult(data, {}, ())


class _Buggy(JpegScrubber):
    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        return [ScrubResult(data, {}, ())][1]


def test_clean_refuses_residue(corpus: dict[str, DirtyFile]) -> None:
    with pytest.raises(ScrubRefused, match="residue"):
        _Passthrough().clean(corpus["phone.jpg"].data, ScrubOptions())


def test_parser_bugs_fail_closed_as_malformed() -> None:
    with pytest.raises(MalformedImage, match="IndexError"):
        _Buggy().clean(small_jpeg(), ScrubOptions())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(buf)) if buf else 0
        kind = rng.randrange(5)
        if kind == 0 and buf:
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif kind == 2:
            del buf[at : at + rng.randint(1, 64)]
        elif kind == 3:
            buf[at:at] = buf[at : at + rng.randint(1, 64)]
        else:
            buf[at : at + 4] = struct.pack(">I", rng.choice([0, 1, 0xFFFFFFFF, len(buf)]))
    return bytes(buf)


def test_mutated_corpus_raises_only_documented_errors(corpus: dict[str, DirtyFile]) -> None:
    """Random mutations of valid files for ~2 s; anything but the documented errors fails."""
    rng, deadline, runs = random.Random(20240506), time.monotonic() + 2.0, 0
    options = ScrubOptions(max_pixels=1_000_000)
    files = list(corpus.values())
    while time.monotonic() < deadline:
        dirty = files[runs % len(files)]
        seed = rng.randrange(2**32)
        mutated = _mutate(random.Random(seed), dirty.data)
        try:
            scrubber_for(dirty.format).clean(mutated, options)
        except DOCUMENTED:
            pass
        except Exception as exc:  # report the reproducer, then fail
            pytest.fail(f"{dirty.name} seed={seed}: {type(exc).__name__}: {exc}")
        runs += 1
    assert runs > 50


def test_crc_helper_is_real_zlib() -> None:
    assert png_chunk(b"IEND", b"")[-4:] == struct.pack(">I", zlib.crc32(b"IEND"))
