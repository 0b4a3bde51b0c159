"""A stored file is served only as the path its registry row names.

The CLDV header binds a file's chunks to its own file id and data key, but
nothing bound the file to its place: swapping two stored files on the share
made the gateway serve patient A's image as patient B's, and copy it onward.
Every read now checks the header's file id against the registry row of the
path (and the key row against that file id); a mismatch is
``500 content-authentication-failed``, audited.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy

from gateway.db import AuditEvent
from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, run_cli
from tests.integration.test_consent import consent
from tests.integration.test_encryption_at_rest import file_id_of, stored_path

A, B = "9434765919", "4010232137"
CODE = "content-authentication-failed"


def _image(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "PNG")
    return out.getvalue()


def _swap(first: Path, second: Path) -> None:
    """Swap two stored files on the backing folder, as someone with share access could."""
    spare = first.with_name(first.name + ".swap")
    os.rename(first, spare)
    os.rename(second, first)
    os.rename(spare, second)


def _failures(instance: Instance) -> list[tuple[str, str | None, int]]:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(AuditEvent.action, AuditEvent.logical_path, AuditEvent.status)
                .where(AuditEvent.code == CODE)
                .order_by(AuditEvent.seq)
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def _store(gateway: Gateway, share: str, patient: str, name: str, body: bytes) -> Path:
    s = gateway.session()
    folder = f"{gateway.url}/{share}/{patient}"
    assert s.request("MKCOL", folder).status_code == 201
    assert s.put(f"{folder}/{name}", data=body).status_code == 201
    logical = f"/{patient}/{name}"
    return stored_path(gateway.instance, share, file_id_of(gateway.instance, share, logical))


def test_swapped_images_are_not_served_or_copied(gateway: Gateway) -> None:
    for patient in (A, B):
        consent(gateway.instance, "--scope", "record", "--scope", "share", patient=patient)
    image_a, image_b = _image((200, 0, 0)), _image((0, 0, 200))
    path_a = _store(gateway, "clinical", A, "wound.png", image_a)
    path_b = _store(gateway, "clinical", B, "wound.png", image_b)
    s = gateway.session()
    url_a, url_b = (f"{gateway.url}/clinical/{p}/wound.png" for p in (A, B))
    stored_a = s.get(url_a).content
    # The copy works while the files are in place (the refusals below are the swap's).
    ok = s.request("COPY", url_a, headers={"Destination": f"{gateway.url}/clinical/{A}/c.png"})
    assert ok.status_code == 201

    _swap(path_a, path_b)
    for url in (url_a, url_b):
        r = s.get(url)
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (500, CODE), url
        assert stored_a not in r.content
    same_share = s.request(
        "COPY", url_b, headers={"Destination": f"{gateway.url}/clinical/{B}/copy.png"}
    )
    assert (same_share.status_code, same_share.headers.get("X-Clindav-Error")) == (500, CODE)
    across = s.request(
        "COPY", url_b, headers={"Destination": f"{gateway.url}/referrals/wound-{B}.png"}
    )
    assert (across.status_code, across.headers.get("X-Clindav-Error")) == (500, CODE)
    assert s.get(f"{gateway.url}/clinical/{B}/copy.png").status_code == 404
    assert s.get(f"{gateway.url}/referrals/wound-{B}.png").status_code == 404
    assert _failures(gateway.instance) == [
        ("GET", f"/{A}/wound.png", 500),
        ("GET", f"/{B}/wound.png", 500),
        ("COPY", f"/{B}/wound.png", 500),
        ("COPY", f"/{B}/wound.png", 500),
    ]

    fsck = run_cli("fsck", config=gateway.instance.config, check=False)
    assert fsck.returncode == 1, (fsck.stdout, fsck.stderr)
    assert sorted(line.split("\t")[:2] for line in fsck.stdout.splitlines()[:-1]) == [
        ["misplaced-ciphertext", f"clinical:/{p}/wound.png"] for p in sorted((A, B))
    ]

    _swap(path_a, path_b)  # put back: each is served as itself again
    assert s.get(url_a).content == stored_a
    assert run_cli("fsck", config=gateway.instance.config, check=False).returncode == 0


def test_swapped_large_files_are_not_streamed(gateway: Gateway) -> None:
    # Over 16 MiB a stored file is streamed chunk by chunk: the same check applies.
    big_a, big_b = os.urandom(17 << 20), os.urandom(17 << 20)
    path_a = _store(gateway, "documents", A, "scan.bin", big_a)
    path_b = _store(gateway, "documents", B, "scan.bin", big_b)
    _swap(path_a, path_b)
    s = gateway.session()
    for patient in (A, B):
        r = s.get(f"{gateway.url}/documents/{patient}/scan.bin")
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (500, CODE)
        assert big_a[:4096] not in r.content and big_b[:4096] not in r.content
