"""Decoding uploaded images is bounded by a per-process memory budget.

A PNG of a few dozen KiB can declare tens of megapixels; decoding it
allocates them all.  Two parallel 81-megapixel uploads took a worker from 95
MB to 682 MB.  Every decode now reserves its pixels in ``limits.decode_memory``
first (gateway/decoding.py), from the header's dimensions: an image that
alone needs more is refused with 413 before anything is allocated, and
parallel decodes wait their turn.  Measured on the real gateway process: its
peak resident size (VmHWM in /proc) while the uploads run.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Gateway, Instance, start_gateway
from tests.integration.test_pipeline import audit_rows

MiB = 1024 * 1024
BUDGET = 48 * MiB


def big_png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG of these dimensions that compresses to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    packer = zlib.compressobj(9)
    row = b"\x00" + bytes([seed]) * (3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def memory(gateway: Gateway) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the serving process, in bytes."""
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


@pytest.fixture
def bounded(instance: Instance) -> Gateway:
    data = instance.settings()
    data.setdefault("limits", {}).update({"decode_memory": BUDGET, "decode_wait": 300})
    instance.write_settings(data)
    gw = start_gateway(instance)
    s = gw.session()
    # Warm up: the first requests load code, pools and caches.
    for i in range(3):
        assert s.put(f"{gw.url}/documents/warm-{i}.png", data=big_png(64, 64)).status_code == 201
    yield gw
    gw.stop()


def test_an_image_over_the_budget_is_refused_before_decoding(bounded: Gateway) -> None:
    body = big_png(5000, 4000)  # 20 megapixels: 80 MB decoded, a few dozen KiB sent
    assert len(body) < 200_000
    before = memory(bounded)
    r = bounded.session().put(f"{bounded.url}/documents/huge.png", data=body)
    assert (r.status_code, r.headers.get("X-Clindav-Error")) == (413, "image-too-large-to-decode")
    assert "decode" in r.text
    assert memory(bounded)["VmHWM"] - max(before["VmRSS"], 0) < 40 * MiB
    assert bounded.session().get(f"{bounded.url}/documents/huge.png").status_code == 404
    refused = [e for e in audit_rows(bounded.instance, "PUT") if e.logical_path == "/huge.png"]
    assert [(e.status, e.code) for e in refused] == [(413, "image-too-large-to-decode")]


def test_parallel_decodes_stay_within_the_budget(bounded: Gateway) -> None:
    # 3500 x 3000 RGB: 42 MB decoded each, so the budget admits one at a time.
    bodies = [big_png(3500, 3000, seed) for seed in range(6)]
    before = memory(bounded)

    def put(index: int) -> int:
        s = bounded.session()
        return s.put(f"{bounded.url}/documents/big-{index}.png", data=bodies[index]).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        codes = list(pool.map(put, range(len(bodies))))
    assert codes == [201] * len(bodies)
    growth = memory(bounded)["VmHWM"] - before["VmRSS"]
    # Six decodes at once would take 250 MB; the budget keeps the peak near one.
    assert growth < BUDGET + 40 * MiB, f"peak grew by {growth // MiB} MiB"


def test_a_decode_that_finds_no_room_gives_up_with_503() -> None:
    # In-process, so that "the budget is held" does not depend on timing.
    from gateway.decoding import DecodeBudget, DecodeBusy, ImageTooLargeToDecode

    budget = DecodeBudget(BUDGET, wait=0)
    with budget.reserve((3000, 3000), "RGB"):  # 36 MB of 48 MiB
        with pytest.raises(DecodeBusy), budget.reserve((2000, 2000), "RGB"):  # 16 MB more
            pass
        with budget.reserve((1000, 1000), "L"):  # 1 MB does
            pass
    with budget.reserve((2000, 2000), "RGB"):  # released: fits again
        pass
    with pytest.raises(ImageTooLargeToDecode), budget.reserve((4000, 4000), "RGB"):
        pass
