"""Bounded image decoding: one memory budget per serving process.

Decoding an image allocates its whole pixel buffer, whatever the size of the
file: a PNG of a few hundred KiB can declare 81 megapixels (324 MiB once
decoded), and two such uploads in parallel took a worker from 95 MB to 682
MB.  Every decode of uploaded pixels (the ``filetype`` stage's full decode,
the TIFF scrubber's re-encode) first reserves what it will hold, estimated
from the dimensions and mode in the header before any pixel is allocated:

* an image whose estimate alone exceeds ``limits.decode_memory`` is refused
  at once: 413 ``image-too-large-to-decode``;
* otherwise the reservation waits until the decodes in progress leave room,
  at most ``limits.decode_wait`` seconds, then gives up: 503
  ``decode-busy`` (nothing is stored; a client may try again).

So the pixels being decoded in one process never exceed the budget, and the
number of concurrent decodes follows from it (one 81-megapixel decode at a
time under a 512 MiB budget, many small ones).  The budget is per process:
the whole gateway holds at most ``server.workers`` times it.

:func:`opened` is how every reader of uploaded pixels (the ``filetype``
stage, the console's pictures) opens them: with the one Pillow decoder the
format table names for the bytes, never Pillow's auto-detection.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from PIL import Image

from gateway.errors import PayloadTooLarge, ServiceUnavailable
from gateway.settings import LimitSettings

MiB = 1024 * 1024


class ImageTooLargeToDecode(PayloadTooLarge):
    code = "image-too-large-to-decode"
    message = (
        "The image has more pixels than this server can check (limits.decode_memory); "
        "it was not stored."
    )


class DecodeBusy(ServiceUnavailable):
    code = "decode-busy"
    message = "The gateway is busy checking other images; nothing was stored. Try again shortly."


def bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel of ``mode`` (multi-band modes take 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith(("I;16", "BGR;15", "BGR;16")):
        return 2
    return 4


class DecodeBudget:
    """A weighted semaphore over bytes of decoded pixels (module docstring)."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self._used = 0
        self._room = threading.Condition()

    def need(
        self, size: tuple[int, int], mode: str, *, copies: int = 1, what: str = "image"
    ) -> int:
        """Bytes ``copies`` decoded copies take; ImageTooLargeToDecode if over the budget.

        Also how an image that is not decoded now is judged: one this process
        could never decode (to check, convert or show it) is refused alike.
        """
        need = size[0] * size[1] * bytes_per_pixel(mode) * copies
        if need > self.limit:
            raise ImageTooLargeToDecode(
                f"{what} {size[0]}x{size[1]} {mode} needs {need // MiB} MiB to check, "
                f"over limits.decode_memory ({self.limit // MiB} MiB)"
            )
        return need

    @contextmanager
    def reserve(
        self, size: tuple[int, int], mode: str, *, copies: int = 1, what: str = "image"
    ) -> Iterator[None]:
        """Hold the memory ``copies`` decoded copies of an image need, for the block."""
        need = self.need(size, mode, copies=copies, what=what)
        with self._room:
            if not self._room.wait_for(lambda: self._used + need <= self.limit, self.wait):
                raise DecodeBusy(
                    f"{what} needs {need // MiB} MiB; {self._used // MiB} MiB of "
                    f"{self.limit // MiB} MiB still in use after {self.wait:g} s"
                )
            self._used += need
        try:
            yield
        finally:
            with self._room:
                self._used -= need
                self._room.notify_all()


# The process's budget: set from the settings when the gateway starts
# (gateway/app.py); the defaults apply to tools that decode without one.
_defaults = LimitSettings()
BUDGET = DecodeBudget(_defaults.decode_memory, _defaults.decode_wait)


def configure(limits: LimitSettings) -> None:
    """Size this process's budget from ``limits.decode_memory`` and ``decode_wait``."""
    global BUDGET
    BUDGET = DecodeBudget(limits.decode_memory, limits.decode_wait)


def reserve(
    size: tuple[int, int], mode: str, *, copies: int = 1, what: str = "image"
) -> AbstractContextManager[None]:
    """:meth:`DecodeBudget.reserve` on this process's budget."""
    return BUDGET.reserve(size, mode, copies=copies, what=what)


def check_decodable(size: tuple[int, int], mode: str, *, what: str = "image") -> None:
    """:meth:`DecodeBudget.need` on this process's budget: refuse what could never be decoded."""
    BUDGET.need(size, mode, what=what)


@contextmanager
def opened(body: bytes, decoder: str) -> Iterator[Image.Image]:
    """``body`` opened by the one Pillow decoder ``decoder`` (nothing decoded yet).

    Pillow's decompression-bomb warning is an error here.
    """
    if decoder == "HEIF":
        import pillow_heif  # its libheif only in processes that meet a HEIC

        pillow_heif.register_heif_opener()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(body), formats=[decoder]) as img:
            yield img
