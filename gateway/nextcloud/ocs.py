"""What clindav says about itself to the Nextcloud apps: status.php and the OCS answers.

The content follows ../shared/NEXTCLOUD.md (§2 rows 1, 4, 5; §3): a current
server version (the desktop wizard uses Login Flow v2 from 16 on), chunking
v2 advertised (without it the desktop falls back to legacy chunking, which
corrupts files), and nothing clindav does not implement: no bulk upload,
locking, end-to-end encryption, sharing or notifications (a client that is
told of them fails every upload when they are missing).

OCS answers are an envelope ``{"ocs": {"meta": ..., "data": ...}}``, in JSON
with ``format=json`` (or an ``Accept`` naming JSON) and in XML otherwise, as
Nextcloud's own; v1 says status code 100 for success, v2 the HTTP status.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from gateway import __version__

SERVER_VERSION = (30, 0, 5, 1)
VERSION_TEXT = ".".join(str(part) for part in SERVER_VERSION)
VERSION_STRING = ".".join(str(part) for part in SERVER_VERSION[:3])
PRODUCT = "clindav"


def status() -> dict[str, Any]:
    """``/status.php``: ``installed`` is the key every client requires."""
    return {
        "installed": True,
        "maintenance": False,
        "needsDbUpgrade": False,
        "version": VERSION_TEXT,
        "versionstring": VERSION_STRING,
        "edition": "",
        "productname": PRODUCT,
        "extendedSupport": False,
    }


def capabilities() -> dict[str, Any]:
    """``cloud/capabilities``; iOS needs ``version.string`` and ``version.major`` typed."""
    major, minor, micro, _build = SERVER_VERSION
    return {
        "version": {
            "major": major,
            "minor": minor,
            "micro": micro,
            "string": VERSION_STRING,
            "edition": "",
            "extendedSupport": False,
        },
        "capabilities": {
            "core": {
                "pollinterval": 60,
                "webdav-root": "remote.php/webdav",
                "status": status(),
            },
            "dav": {"chunking": "1.0"},
            "files": {
                "bigfilechunking": True,
                "undelete": False,
                "versioning": False,
                "blacklisted_files": [".htaccess"],
            },
            "checksums": {"supportedTypes": ["SHA1"], "preferredUploadType": "SHA1"},
            "clindav": {"version": __version__},
        },
    }


def user(uid: str) -> dict[str, Any]:
    """``cloud/user``: ``id`` is the name in every DAV path of the device; no quota."""
    return {
        "id": uid,
        "enabled": True,
        "display-name": uid,
        "displayname": uid,
        "email": None,
        "quota": {"free": -3, "used": 0, "total": -3, "relative": 0, "quota": -3},
    }


def wants_json(query: dict[str, list[str]], accept: str) -> bool:
    return query.get("format", [""])[0].lower() == "json" or "application/json" in accept


def envelope(version: int, data: Any, *, status: int = 200, message: str = "OK") -> dict[str, Any]:
    """The OCS envelope; ``version`` 1 or 2 (``/ocs/v1.php`` or ``/ocs/v2.php``)."""
    ok = status < 400
    code = (100 if ok else status) if version == 1 else status
    return {
        "ocs": {
            "meta": {
                "status": "ok" if ok else "failure",
                "statuscode": code,
                "message": message,
                "totalitems": "",
                "itemsperpage": "",
            },
            "data": data,
        }
    }


def render(document: dict[str, Any], as_json: bool) -> tuple[bytes, str]:
    """The body and its content type."""
    if as_json:
        return json.dumps(document).encode(), "application/json; charset=utf-8"
    root = ET.Element("ocs")
    for key, value in document["ocs"].items():
        _xml(ET.SubElement(root, key), value)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body, "application/xml; charset=utf-8"


def _xml(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _xml(ET.SubElement(element, key), inner)
    elif isinstance(value, list):
        for inner in value:
            _xml(ET.SubElement(element, "element"), inner)
    elif isinstance(value, bool):
        element.text = "1" if value else ""
    elif value is not None:
        element.text = str(value)
