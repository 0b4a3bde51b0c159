"""The scrubber contract: one parser per format, each keeping only an allowlist.

Contract.  A :class:`Scrubber` turns the bytes of one file of its format into
a cleaned copy (:meth:`Scrubber.scrub`) and, independently, re-parses a file
and lists anything outside its allowlist (:meth:`Scrubber.residue`).  The
pipeline calls only :meth:`Scrubber.clean`, a fixed template: scrub, then run
``residue()`` on the output and refuse on any finding.  Scrubbers rewrite
containers at the segment/chunk/box level and copy coded pixels untouched
(only TIFF re-encodes, losslessly, and verifies); each module's docstring
states what it keeps and its decisions.

Error behaviour.  Bad or hostile input raises only :class:`MalformedImage`
(the bytes are not a well-formed file of the format: truncated, corrupt
offsets, loops, bad checksums, decompression bombs) or :class:`ScrubRefused`
(well-formed, but it cannot be cleaned completely, or the output still holds
residue).  ``clean()`` turns any parsing exception that slips through a
parser (``struct.error``, ``IndexError``, Pillow errors, ``MemoryError``...)
into :class:`MalformedImage`, so a parser bug fails closed.  Pillow's
``DecompressionBombWarning`` is made an error when this module is imported
(every scrubber imports it); ``ScrubOptions.max_pixels`` is checked from
headers before anything decodes.

Which scrubber cleans which format is written in the format table
(plugins/formats.py); nothing is discovered.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from abc import ABC
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from PIL import Image

from gateway.errors import UnprocessableContent

# Installed once at import (a process-wide filter; toggling it per call with
# catch_warnings would not be thread-safe in a threaded server).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class ScrubRefused(UnprocessableContent):
    """The file cannot be cleaned completely, or its output kept residue."""

    code = "scrub-incomplete"
    message = "The file's metadata could not be removed completely, so it was not stored."


class MalformedImage(UnprocessableContent):
    """The bytes are not a well-formed file of the declared format."""

    code = "malformed-image"
    message = "The file is damaged or not a valid image of its type."


@dataclass(frozen=True)
class ScrubResult:
    """A cleaned file and what happened; names and counts only, never values."""

    data: bytes
    removed: dict[str, int]
    kept: tuple[str, ...]
    # Bytes after the image's end, dropped from ``data``; the pipeline looks
    # at them to tell a phone's trailer from a polyglot (never stored).
    trailing: bytes = b""


# Called with an image's (width, height) and Pillow mode once its header is
# read (by a structural check on a stream; plugins/filetype.py).
HeaderCheck = Callable[[tuple[int, int], str], None]


@dataclass(frozen=True)
class ScrubOptions:
    """Policy knobs: keep the capture date? how many pixels may a frame have?"""

    keep_capture_date: bool = True
    max_pixels: int = 100_000_000


# What a parser may raise on hostile bytes; clean() reports them as malformed.
# (Pillow's DecompressionBombWarning is a Warning, hence covered.)
_PARSE_ERRORS = (
    struct.error,
    LookupError,
    ValueError,
    EOFError,
    OSError,
    SyntaxError,
    ArithmeticError,
    MemoryError,
    RecursionError,
    zlib.error,
    Image.DecompressionBombError,
    Warning,  # a library warning that the interpreter's filters turned into an error
)


@contextmanager
def parse_errors_as_malformed(format_name: str) -> Iterator[None]:
    try:
        yield
    except UnprocessableContent:
        raise
    except _PARSE_ERRORS as exc:
        raise MalformedImage(f"{format_name}: {type(exc).__name__}: {exc}") from exc


# What a format's walk yields: a kind ("segment", "chunk", "trailing"...) and its value.
WalkEvent = tuple[str, Any]


class PieceWalk:
    """A format's walk over a file fed in pieces of any size: :meth:`_step` reads the
    next event from ``_buf`` at ``_pos`` (None: it needs more bytes)."""

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0  # what is consumed of _buf (dropped at the end of each feed)

    def _walk(self, data: bytes) -> list[WalkEvent]:
        """Every event the piece ``data`` completes."""
        # The piece itself when nothing is pending: no copy of a whole body.
        self._buf = self._buf + data if self._buf else data
        events: list[WalkEvent] = []
        while (event := self._step()) is not None:
            events.append(event)
        self._buf = self._buf[self._pos :]
        self._pos = 0
        return events

    def _step(self) -> WalkEvent | None:
        raise NotImplementedError


class ScrubStream(Protocol):
    """A scrub that rewrites a file as it arrives, piece by piece.

    ``feed`` takes the next piece and returns the cleaned bytes it can pass
    on (possibly none yet); ``finish`` returns the last ones, or raises
    MalformedImage / ScrubRefused.  Bytes after the image's end go to the
    ``trailing`` callable it was made with, never on.  After ``finish``:
    ``removed``, ``kept`` and whether the output differs from the input
    (``changed``).
    """

    removed: dict[str, int]
    kept: tuple[str, ...]
    changed: bool

    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class ResidueStream(Protocol):
    """:meth:`Scrubber.residue` piece by piece: ``feed`` returns its piece unchanged,
    ``finish`` the findings."""

    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> list[str]: ...


class Scrubber(ABC):
    """One format's scrubber: declares its allowlist, rewrites, re-checks.

    A format whose metadata is at the front can scrub as a stream: it
    returns a :class:`ScrubStream` and a :class:`ResidueStream`, and its
    whole-file ``scrub`` and ``residue`` are those streams fed the whole
    file (one implementation).  The others implement ``scrub`` and
    ``residue`` on whole files.
    """

    format_name: ClassVar[str]

    def scrub_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> ScrubStream | None:
        """The streaming scrub of this format, or None when it needs whole files.

        ``walk``: the format's parse of the same stream that its structural
        check reads too (the format table's ``walk``), when they share one."""
        return None

    def residue_stream(self, options: ScrubOptions) -> ResidueStream | None:
        return None

    def scrub(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        """Rewrite ``data`` keeping only the allowlist.

        Raises MalformedImage or ScrubRefused.
        """
        trailing: list[bytes] = []
        stream = self.scrub_stream(options, trailing.append)
        if stream is None:
            raise NotImplementedError(f"{type(self).__name__} scrubs neither whole nor streamed")
        out = stream.feed(data)
        out += stream.finish()
        return ScrubResult(out, stream.removed, stream.kept, trailing=b"".join(trailing))

    def residue(self, data: bytes, options: ScrubOptions) -> list[str]:
        """Re-parse ``data``; name everything outside the allowlist (empty: clean).

        Raises MalformedImage if ``data`` does not parse.
        """
        check = self.residue_stream(options)
        if check is None:
            raise NotImplementedError(f"{type(self).__name__} checks neither whole nor streamed")
        check.feed(data)
        return check.finish()

    def clean(self, data: bytes, options: ScrubOptions) -> ScrubResult:
        """Scrub, then verify the output; raise ScrubRefused on any residue."""
        with parse_errors_as_malformed(self.format_name):
            result = self.scrub(data, options)
            found = self.residue(result.data, options)
        if found:
            raise ScrubRefused(f"{self.format_name}: residue after scrub: {', '.join(found)}")
        return result

    def clean_stream(
        self,
        options: ScrubOptions,
        trailing: Callable[[bytes], None],
        walk: object | None = None,
    ) -> CleanStream | None:
        """:meth:`clean` as a stream (None: this format needs whole files)."""
        scrub = self.scrub_stream(options, trailing, walk)
        check = self.residue_stream(options)
        if scrub is None or check is None:
            return None
        return CleanStream(self.format_name, scrub, check)


class CleanStream:
    """Scrub as the file streams, and check every output byte against the allowlist
    again on its way out; ScrubRefused at the end on any residue (the caller has
    stored nothing yet).  Parser errors are MalformedImage, as in :meth:`Scrubber.clean`."""

    def __init__(self, format_name: str, scrub: ScrubStream, check: ResidueStream) -> None:
        self._format = format_name
        self._scrub = scrub
        self._check = check

    @property
    def result(self) -> ScrubStream:
        """What was removed and kept, and whether the bytes changed (after finish)."""
        return self._scrub

    def feed(self, data: bytes) -> bytes:
        with parse_errors_as_malformed(self._format):
            return self._check.feed(self._scrub.feed(data))

    def finish(self) -> bytes:
        with parse_errors_as_malformed(self._format):
            out = self._check.feed(self._scrub.finish())
            found = self._check.finish()
        if found:
            raise ScrubRefused(f"{self._format}: residue after scrub: {', '.join(found)}")
        return out


def check_pixels(width: int, height: int, options: ScrubOptions, what: str) -> None:
    """Refuse empty images and decompression bombs before anything is decoded."""
    if width <= 0 or height <= 0:
        raise MalformedImage(f"{what}: empty dimensions {width}x{height}")
    if width * height > options.max_pixels:
        raise MalformedImage(
            f"{what}: {width}x{height} exceeds max_pixels={options.max_pixels} (decompression bomb)"
        )


def count(removed: dict[str, int], name: str, n: int = 1) -> None:
    """Add ``n`` to the tally of removed ``name``."""
    removed[name] = removed.get(name, 0) + n
