"""An uploader learns that an image is held until consent is recorded (docs/CONSENT.md).

The PUT's answer says so (``X-Clindav-Held-Until``), PROPFIND lists the live
property ``clindav:held-until`` (from WsgiDAV and from the fast path, the
same), nobody can forge or remove it with PROPPATCH, and it goes away when
consent is recorded.
"""

from __future__ import annotations

import datetime as dt
import re

from lxml import etree

from tests.conftest import Gateway, Instance, start_in_process
from tests.integration.test_consent import PATIENT, consent
from tests.integration.test_dav_methods import small_jpeg

HELD = "{clindav:}held-until"
NAMED = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:C="clindav:">'
    "<D:prop><C:held-until/><D:getcontentlength/></D:prop></D:propfind>"
)


def held_values(body: bytes) -> dict[str, str | None]:
    """href -> the held-until value of each response (None: not listed with 200)."""
    root = etree.fromstring(body)
    found: dict[str, str | None] = {}
    for response in root.iter("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        found[href] = None
        for propstat in response.iter("{DAV:}propstat"):
            if "200" in (propstat.findtext("{DAV:}status") or ""):
                element = propstat.find(f"{{DAV:}}prop/{HELD}")
                if element is not None:
                    found[href] = element.text
    return found


def test_a_held_upload_is_announced_by_header_and_property(gateway: Gateway) -> None:
    alice, admin = gateway.session("alice"), gateway.session("root-admin")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", folder).status_code == 201
    before = dt.datetime.now(dt.UTC)
    r = alice.put(f"{folder}/mole.jpg", data=small_jpeg())
    assert r.status_code == 201
    held = r.headers["X-Clindav-Held-Until"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", held)
    until = dt.datetime.strptime(held, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert dt.timedelta(days=29, hours=23) < until - before < dt.timedelta(days=30, minutes=1)
    listing = alice.request("PROPFIND", folder, headers={"Depth": "1"})
    assert listing.status_code == 207
    assert held_values(listing.content)[f"/clinical/{PATIENT}/mole.jpg"] == held
    assert held_values(listing.content)[f"/clinical/{PATIENT}/"] is None
    one = alice.request("PROPFIND", f"{folder}/mole.jpg", headers={"Depth": "0"})
    assert held_values(one.content) == {f"/clinical/{PATIENT}/mole.jpg": held}
    named = admin.request("PROPFIND", f"{folder}/mole.jpg", headers={"Depth": "0"}, data=NAMED)
    assert held_values(named.content) == {f"/clinical/{PATIENT}/mole.jpg": held}
    # Not held: no header, and the property is not there.
    consent(gateway.instance, "--scope", "record")
    r = alice.put(f"{folder}/arm.jpg", data=small_jpeg())
    assert r.status_code == 201 and "X-Clindav-Held-Until" not in r.headers
    listing = alice.request("PROPFIND", folder, headers={"Depth": "1"})
    assert set(held_values(listing.content).values()) == {None}  # released too
    named = alice.request("PROPFIND", f"{folder}/arm.jpg", headers={"Depth": "0"}, data=NAMED)
    assert b"404 Not Found" in named.content and held_values(named.content) == {
        f"/clinical/{PATIENT}/arm.jpg": None
    }


def test_the_property_cannot_be_set_or_removed(gateway: Gateway) -> None:
    alice = gateway.session("alice")
    folder = f"{gateway.url}/documents"
    assert alice.put(f"{folder}/a.txt", data=b"text").status_code == 201
    for update in (
        "<D:set><D:prop><C:held-until>2099-01-01T00:00:00Z</C:held-until></D:prop></D:set>",
        "<D:remove><D:prop><C:held-until/></D:prop></D:remove>",
    ):
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<D:propertyupdate xmlns:D="DAV:" xmlns:C="clindav:">{update}</D:propertyupdate>'
        )
        r = alice.request("PROPPATCH", f"{folder}/a.txt", data=body)
        assert r.status_code == 207 and b"403 Forbidden" in r.content, r.text
    listing = alice.request("PROPFIND", folder, headers={"Depth": "1"})
    assert set(held_values(listing.content).values()) == {None}


def test_wsgidav_and_the_fast_path_list_it_the_same(instance: Instance) -> None:
    bodies = []
    for fast in (True, False):
        data = instance.settings()
        data["server"]["propfind_fast_path"] = fast
        instance.write_settings(data)
        gw = start_in_process(instance)
        try:
            alice = gw.session("alice")
            folder = f"{gw.url}/clinical/{PATIENT}"
            if fast:
                assert alice.request("MKCOL", folder).status_code == 201
                assert alice.put(f"{folder}/mole.jpg", data=small_jpeg()).status_code == 201
            bodies.append(
                [
                    alice.request("PROPFIND", folder, headers={"Depth": depth}, data=body).content
                    for depth, body in (("1", ""), ("1", NAMED), ("0", ""))
                ]
            )
            bodies[-1].append(
                alice.request("PROPFIND", f"{folder}/mole.jpg", headers={"Depth": "0"}).content
            )
        finally:
            gw.stop()
    assert bodies[0] == bodies[1]
    assert HELD.split("}")[1].encode() in bodies[0][0]
