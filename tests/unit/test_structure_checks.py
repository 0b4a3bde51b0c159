"""The filetype stage's structural checks: complete files pass without a decode,
cut or incomplete ones are refused, and ``decode: full`` still decodes.

Each refused case here is a file whose header Pillow opens happily: only the
structural walk (or a full decode) can tell it is incomplete.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from gateway import decoding
from gateway.decoding import DecodeBudget, DecodeBusy
from plugins.filetype import FileTypeOptions, UndecodableImage, check_image
from plugins.formats import BY_NAME, FORMATS
from tests.scrub_corpus import dirty_file
from tests.scrub_corpus_images import photo, png_chunk


def _jpeg(*, progressive: bool) -> bytes:
    out = io.BytesIO()
    photo(256, 192).save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def _check(body: bytes, fmt: str, decode: str = "structure") -> None:
    check_image(body, BY_NAME[fmt], decode, 100_000_000)  # type: ignore[arg-type]


def _without_last_scan(jpeg: bytes) -> bytes:
    """A progressive JPEG whose final scan is gone; it still ends in EOI."""
    last_sos = jpeg.rindex(b"\xff\xda")
    return jpeg[:last_sos] + b"\xff\xd9"


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


def _png_ihdr() -> bytes:
    return struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("phone.jpg", "jpeg"),
        ("dirty.png", "png"),
        ("animated.gif", "gif"),
        ("still.webp", "webp"),
        ("pillow-heif.heic", "heif"),
        ("hand-built.heic", "heif"),
    ],
)
def test_complete_files_pass_the_structural_check(name: str, fmt: str) -> None:
    _check(dirty_file(name).data, fmt)


def test_a_progressive_jpeg_passes_and_one_missing_a_scan_is_refused() -> None:
    whole = _jpeg(progressive=True)
    _check(whole, "jpeg")
    cut = _without_last_scan(whole)
    with Image.open(io.BytesIO(cut)) as img:  # the header alone looks fine
        assert img.size == (256, 192)
    with pytest.raises(UndecodableImage, match="scans do not complete"):
        _check(cut, "jpeg")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_a_cut_jpeg_is_refused(fraction: float) -> None:
    data = _jpeg(progressive=False)
    with pytest.raises(UndecodableImage):
        _check(data[: int(len(data) * fraction)], "jpeg")


def test_a_jpeg_whose_scan_names_no_frame_component_is_refused() -> None:
    data = bytearray(_jpeg(progressive=False))
    sos = data.index(b"\xff\xda")
    data[sos + 5] = 0x77  # the first component selector of the scan
    with pytest.raises(UndecodableImage, match="unknown component"):
        _check(bytes(data), "jpeg")


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no IDAT", _png([(b"IHDR", _png_ihdr()), (b"IEND", b"")])),
        ("no IEND", _png([(b"IHDR", _png_ihdr()), (b"IDAT", b"\x78\x9c")])),
        (
            "bad IDAT CRC",
            _png([(b"IHDR", _png_ihdr()), (b"IDAT", b"\x78\x9c\x03\x00")])[:-4]
            + b"\x00\x00\x00\x00",
        ),
    ],
)
def test_incomplete_pngs_are_refused(case: str, body: bytes) -> None:
    with pytest.raises(UndecodableImage):
        _check(body, "png")


@pytest.mark.parametrize("name", ["pillow-heif.heic", "hand-built.heic"])
def test_a_cut_or_padded_heif_is_refused(name: str) -> None:
    data = dirty_file(name).data
    with pytest.raises(UndecodableImage):
        _check(data[:-100], "heif")
    with pytest.raises(UndecodableImage):
        _check(data + b"\x00\x00\x00\x10junk-after-boxes", "heif")


def test_gif_and_webp_without_their_end_are_refused() -> None:
    out = io.BytesIO()
    photo(32, 32).convert("P").save(out, "GIF")
    gif = out.getvalue()
    _check(gif, "gif")
    with pytest.raises(UndecodableImage):
        _check(gif[:-1], "gif")  # its trailer byte
    out = io.BytesIO()
    photo(64, 64).save(out, "WEBP")
    webp = out.getvalue()
    _check(webp, "webp")
    with pytest.raises(UndecodableImage):
        _check(webp[: len(webp) // 2], "webp")


def test_the_structural_check_never_waits_for_the_decode_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``structure`` allocates no pixels; ``full`` reserves them and decodes."""
    budget = DecodeBudget(16 * 1024 * 1024, wait=0)
    monkeypatch.setattr(decoding, "BUDGET", budget)
    data = _jpeg(progressive=False)
    with budget.reserve((2048, 2048), "RGB"):  # the whole budget in use elsewhere
        _check(data, "jpeg", "structure")
        with pytest.raises(DecodeBusy):
            _check(data, "jpeg", "full")
    _check(data, "jpeg", "full")


def test_an_image_this_process_could_never_decode_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dimensions are judged from the header against the budget, with no decode."""
    monkeypatch.setattr(decoding, "BUDGET", DecodeBudget(16 * 1024 * 1024, wait=0))
    header = _png([(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 6, 0, 0, 0))])
    with pytest.raises(decoding.ImageTooLargeToDecode):
        _check(header + png_chunk(b"IDAT", b"") + png_chunk(b"IEND", b""), "png")


def test_decode_option_values() -> None:
    assert FileTypeOptions(allow="any").decode == "structure"
    assert FileTypeOptions(allow="any", decode="full").decode == "full"
    # Policies written before: true was the full decode, false none.
    assert FileTypeOptions(allow="any", decode=True).decode == "full"  # type: ignore[arg-type]
    assert FileTypeOptions(allow="any", decode=False).decode == "none"  # type: ignore[arg-type]


def test_every_decodable_format_but_tiff_has_a_structural_check() -> None:
    decodable = {f.name for f in FORMATS if f.pillow is not None}
    assert {f.name for f in FORMATS if f.structure is not None} == decodable - {"tiff"}
