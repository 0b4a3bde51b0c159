"""Client junk (Thumbs.db, desktop.ini, .DS_Store, ._*, ~$*, .~lock*) is never
stored, while the request sequences Explorer and Finder send still succeed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Gateway
from tests.integration.test_dav_methods import LOCK_BODY, explorer_probes, small_jpeg

PATIENT = "9434765919"
WIN32_PROPPATCH = (
    '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
    'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
    "<Z:Win32CreationTime>Sat, 21 Nov 2026 10:00:00 GMT</Z:Win32CreationTime>"
    "<Z:Win32FileAttributes>00000026</Z:Win32FileAttributes>"
    "</D:prop></D:set></D:propertyupdate>"
)


def explorer_copy(s, url: str, body: bytes) -> list[int]:
    """The statuses of Explorer's copy-in sequence for one file."""
    statuses = [s.request("PROPFIND", url, headers={"Depth": "0"}).status_code]
    statuses.append(s.put(url, data=b"").status_code)
    lock = s.request("LOCK", url, data=LOCK_BODY, headers={"Timeout": "Second-3600"})
    statuses.append(lock.status_code)
    token = lock.headers.get("Lock-Token", "<none>")
    statuses.append(
        s.request("PROPPATCH", url, data=WIN32_PROPPATCH, headers={"If": f"({token})"}).status_code
    )
    statuses.append(s.head(url).status_code)
    statuses.append(s.put(url, data=body, headers={"If": f"({token})"}).status_code)
    statuses.append(
        s.request("PROPPATCH", url, data=WIN32_PROPPATCH, headers={"If": f"({token})"}).status_code
    )
    statuses.append(s.request("UNLOCK", url, headers={"Lock-Token": token}).status_code)
    return statuses


def files_under(root) -> list[str]:
    return [os.path.join(d, f) for d, _dirs, files in os.walk(root) for f in files]


def test_explorer_folder_copy_with_thumbs_and_desktop_ini(gateway: Gateway) -> None:
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    photo = explorer_copy(s, f"{folder}/rash.jpg", small_jpeg())
    assert photo == [404, 201, 200, 207, 200, 204, 207, 204]
    for junk in ("Thumbs.db", "desktop.ini"):
        statuses = explorer_copy(s, f"{folder}/{junk}", b"\xd0\xcf\x11\xe0 thumbnail cache " * 50)
        assert statuses == [404, 201, 200, 207, 200, 204, 207, 204], junk
    listing = s.request("PROPFIND", folder, headers={"Depth": "1"}).text
    assert "rash.jpg" in listing
    assert "Thumbs.db" not in listing and "desktop.ini" not in listing
    assert s.get(f"{folder}/Thumbs.db").status_code == 404
    assert len(files_under(gateway.instance.share_dir("clinical"))) == 1
    # Explorer's probes of a share's root are answered 404.
    assert explorer_probes(s, f"{gateway.url}/clinical") == [404, 404, 404]


def test_finder_copy_with_appledouble_and_ds_store(gateway: Gateway) -> None:
    s = gateway.session()
    s.headers["User-Agent"] = "WebDAVFS/3.0.0 (03008000) Darwin/21.6.0 (x86_64)"
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    photo = small_jpeg()

    def chunked(data: bytes):
        yield data[: len(data) // 2]
        yield data[len(data) // 2 :]

    for name, body in (
        ("lesion.jpg", photo),
        ("._lesion.jpg", b"\x00\x05\x16\x07 appledouble GPS"),
        (".DS_Store", b"\x00\x00\x00\x01Bud1 finder state"),
    ):
        r = s.put(
            f"{folder}/{name}",
            data=chunked(body),
            headers={"X-Expected-Entity-Length": str(len(body))},
        )
        assert r.status_code == 201, name
    # Finder reads back what it wrote, including the AppleDouble file, by PROPFIND Depth 0.
    assert (
        s.request("PROPFIND", f"{folder}/._lesion.jpg", headers={"Depth": "0"}).status_code == 207
    )
    listing = s.request("PROPFIND", folder, headers={"Depth": "1"}).text
    assert "lesion.jpg" in listing and "._lesion.jpg" not in listing and ".DS_Store" not in listing
    assert s.delete(f"{folder}/._lesion.jpg").status_code == 204
    stored = files_under(gateway.instance.share_dir("clinical"))
    assert len(stored) == 1
    assert b"appledouble" not in Path(stored[0]).read_bytes()


@pytest.mark.parametrize("name", ["~$report.docx", ".~lock.report.odt#", "THUMBS.DB"])
def test_office_lock_files_are_not_stored(gateway: Gateway, name: str) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/{name}", data=b"owner file").status_code == 201
    assert files_under(gateway.instance.share_dir("documents")) == []
    assert s.get(f"{gateway.url}/documents/{name}").status_code == 404


def test_junk_needs_write_permission_like_anything_else(gateway: Gateway) -> None:
    auditor = gateway.session("audrey")
    assert auditor.put(f"{gateway.url}/documents/Thumbs.db", data=b"x").status_code == 403
