"""Generates legacy shares: years of plaintext files as a practice's share holds them.

Nothing here was written by clindav: plain names, no CLDV header, GPS and
planted ``CLINDAV-PLANT-*`` markers in the photos (from :mod:`tests.scrub_corpus`),
patient numbers in folder names, client junk.  Each builder returns what a
migration must do with every file:

* ``migratable``: logical path -> original bytes (served scrubbed afterwards);
* ``junk``: logical paths of client junk (destroyed);
* ``left``: logical path -> the error code that keeps it in place.

``python -m tests.legacy_share DIR [COUNT]`` writes a photo share of COUNT
small JPEGs (the throughput benchmark of docs/MIGRATION.md).
"""

from __future__ import annotations

import functools
import io
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tests.scrub_corpus import dirty_file
from tests.scrub_corpus_images import exif_tiff, photo

# Valid NHS numbers (modulus-11 check digit).
PATIENTS = ("9434765919", "4010232137", "9876543210")
INVALID_NHS = "1234567890"  # check digit does not match
MARKER = b"CLINDAV-PLANT"
LONG_NAME = (
    "Photograph of the lesion on the left forearm taken at the dermatology follow-up "
    "appointment after the second course of treatment with the new cream, front view.jpg"
)


def nhs_number(index: int) -> str:
    """The ``index``-th valid NHS number counting up from 400 000 000."""
    base = 400_000_000
    while True:
        digits = str(base)
        total = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True))
        check = (11 - total % 11) % 11
        if check != 10:
            if index == 0:
                return digits + str(check)
            index -= 1
        base += 1


@dataclass
class LegacyShare:
    root: Path
    migratable: dict[str, bytes] = field(default_factory=dict)
    junk: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    left_data: dict[str, bytes] = field(default_factory=dict)

    def put(self, logical: str, data: bytes, *, on_disk: str | None = None) -> Path:
        path = self.root / (on_disk or logical).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def file(self, logical: str, data: bytes, *, on_disk: str | None = None) -> None:
        self.put(logical, data, on_disk=on_disk)
        self.migratable[logical] = data

    def junk_file(self, logical: str, data: bytes) -> None:
        self.put(logical, data)
        self.junk.append(logical)

    def left_file(self, logical: str, data: bytes, code: str) -> None:
        self.put(logical, data)
        self.left[logical] = code
        self.left_data[logical] = data


@functools.cache
def _exif() -> bytes:
    return b"Exif\x00\x00" + exif_tiff("LEGACY", thumbnail=False)


def phone_photo(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """A small distinct JPEG with a phone's EXIF, GPS included."""
    out = io.BytesIO()
    photo(*size, seed=seed).save(out, "JPEG", quality=80, exif=_exif())
    return out.getvalue()


def thumbs_db() -> bytes:
    """A Thumbs.db stand-in: thumbnails of the folder's photos."""
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + phone_photo(99, (32, 24)) + MARKER + b"-THUMBS"


def build_clinical(root: Path) -> LegacyShare:
    """The acceptance share: patient folders, dirty images, junk and every reason to stay."""
    share = LegacyShare(root)
    a, b, c = PATIENTS
    jpeg, png = dirty_file("phone.jpg").data, dirty_file("dirty.png").data
    share.file(f"/{a}/rash-left-arm.jpg", jpeg)
    share.file(f"/{a}/2019/follow-up/mole.png", png)
    share.file(f"/{a}/2019/follow-up/mole-closeup.jpg", phone_photo(1))
    share.file(f"/{a}/intimate/area.jpg", phone_photo(2))
    share.file(f"/{b}/lesion.heic", dirty_file("pillow-heif.heic").data)
    nfd = unicodedata.normalize("NFD", "ulcère-talon.jpg")
    share.file(f"/{b}/ulcère-talon.jpg", phone_photo(3), on_disk=f"/{b}/{nfd}")
    share.file(f"/{c}/wound-day1.jpg", phone_photo(4))
    share.junk_file(f"/{b}/Thumbs.db", thumbs_db())
    share.junk_file(f"/{a}/.DS_Store", b"\x00\x00\x00\x01Bud1" + MARKER + b"-DSSTORE")
    share.junk_file(f"/{a}/._rash-left-arm.jpg", b"\x00\x05\x16\x07" + MARKER + b"-APPLEDOUBLE")
    share.junk_file(f"/{c}/desktop.ini", b"[.ShellClassInfo]\r\n" + MARKER + b"-DESKTOPINI")
    share.left_file(f"/{a}/corrupt.jpg", jpeg[: len(jpeg) // 2], "undecodable-image")
    share.left_file(f"/{a}/{LONG_NAME}", phone_photo(5), "name-too-long")
    share.left_file(f"/{INVALID_NHS}/photo.jpg", phone_photo(6), "invalid-patient-id")
    share.left_file("/scan-0001.jpg", phone_photo(7), "not-in-patient-folder")
    letter = f"Referral letter for patient {c}, Mrs Example.\n".encode() * 20
    share.left_file(f"/{c}/referral-letter.txt", letter, "file-type-not-allowed")
    share.left_file(f"/{c}/discharge.pdf", _pdf(c), "file-type-not-allowed")
    (root / c / "empty-folder").mkdir(parents=True)
    return share


def build_documents(root: Path) -> LegacyShare:
    """A documents share: anything goes through (filetype any, scrub passes documents)."""
    share = LegacyShare(root)
    a = PATIENTS[0]
    text = f"Referral letter for patient {a}, Mrs Example.\n".encode() * 20
    share.file(f"/letters/referral-{a}.txt", text)
    share.file("/letters/discharge summary.pdf", _pdf(a))
    share.file("/forms/consent-form-blank.pdf", _pdf("blank"))
    share.junk_file("/letters/Thumbs.db", thumbs_db())
    return share


def build_small(root: Path, count: int = 60) -> LegacyShare:
    """``count`` files in patient folders (JPEG, PNG, junk, one of each refusal)."""
    share = LegacyShare(root)
    patients = [nhs_number(i) for i in range(max(1, count // 6))]
    png = dirty_file("dirty.png").data
    for i in range(count - 3):
        folder = f"/{patients[i % len(patients)]}" + ("/2020" if i % 4 == 0 else "")
        if i % 10 == 9:
            share.junk_file(f"{folder}/._photo-{i:03d}.jpg", b"\x00\x05\x16\x07" + MARKER)
        elif i % 7 == 3:
            share.file(f"{folder}/scan-{i:03d}.png", png)
        else:
            share.file(f"{folder}/photo-{i:03d}.jpg", phone_photo(100 + i))
    share.left_file(f"/{patients[0]}/broken.jpg", phone_photo(1)[:900], "undecodable-image")
    share.left_file(f"/{INVALID_NHS}/photo.jpg", phone_photo(2), "invalid-patient-id")
    share.left_file(f"/{patients[1]}/notes.txt", b"notes\n" * 10, "file-type-not-allowed")
    return share


def build_photos(root: Path, count: int, per_folder: int = 25) -> int:
    """A benchmark share: ``count`` distinct phone JPEGs in patient folders; returns bytes."""
    total = 0
    for i in range(count):
        folder = root / nhs_number(i // per_folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = phone_photo(i, (320, 240))
        (folder / f"IMG_{i:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def _pdf(tag: str) -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        + f"% {tag}\n".encode()
        + b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


if __name__ == "__main__":
    target = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    size = build_photos(target, n)
    print(f"{n} photos, {size / 1e6:.1f} MB in {target}")
