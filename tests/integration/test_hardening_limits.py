"""Dead-property caps, Range handling and the deep COPY bound (issue: hardening).

Against the real gateway: the documented status and code, the refusal
audited, nothing of the refused request stored, and a normal request served
afterwards.  The header flood (431) is in test_hardening.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests
import sqlalchemy

from gateway.dav.limits import MAX_DEAD_PROPERTIES, MAX_DEAD_PROPERTY_BYTES
from gateway.db import DeadProperty
from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, start_in_process
from tests.integration.test_audit import events_by_request
from tests.integration.test_hardening import still_serving


def audited(gateway: Gateway, response: requests.Response) -> list[tuple[str, int, str]]:
    events = events_by_request(gateway.instance)[response.headers["X-Request-Id"]]
    return [(e.action, e.status, e.code) for e in events]


# --- Range ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # several ranges: WsgiDAV served only the last one (206)
        "bytes=" + ",".join(f"{i}-{i}" for i in range(9)),
        "bytes=5-9,0-3,2-6",  # unsorted and overlapping
        "bytes=5-3",  # last before first: WsgiDAV served 7-9
        "bytes=-0",
        "items=0-3",  # another unit: RFC 9110 says ignore it
        "0-3",
        "bytes=abc",
        "bytes=,,,",
        "bytes=" + "9" * 5000 + "-",  # more digits than Python's int() takes by default
        "bytes=0-" + "9" * 40,
    ],
)
def test_multiple_or_malformed_ranges_get_the_whole_content(gateway: Gateway, header: str) -> None:
    s = gateway.session()
    url = f"{gateway.url}/documents/r.txt"
    assert s.put(url, data=b"0123456789").status_code == 201
    r = s.get(url, headers={"Range": header})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == b"0123456789"
    assert "Content-Range" not in r.headers
    assert audited(gateway, r) == [("GET", 200, "ok")]
    still_serving(gateway)


def test_one_range_is_still_served(gateway: Gateway) -> None:
    s = gateway.session()
    url = f"{gateway.url}/documents/r.txt"
    assert s.put(url, data=b"0123456789").status_code == 201
    for header, part, content_range in [
        ("bytes=2-4", b"234", "bytes 2-4/10"),
        ("Bytes = 7-", b"789", "bytes 7-9/10"),
        ("bytes=-2, ", b"89", "bytes 8-9/10"),
    ]:
        r = s.get(url, headers={"Range": header})
        assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, part, content_range)
    r = s.get(url, headers={"Range": "bytes=50-"})
    assert r.status_code == 416
    assert audited(gateway, r) == [("GET", 416, "requested-range-not-satisfiable")]


# --- dead properties -----------------------------------------------------


def proppatch_body(props: dict[str, str], remove: tuple[str, ...] = ()) -> str:
    sets = "".join(f"<Z:{name}>{value}</Z:{name}>" for name, value in props.items())
    removes = "".join(f"<Z:{name}/>" for name in remove)
    return (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
        + (f"<D:set><D:prop>{sets}</D:prop></D:set>" if sets else "")
        + (f"<D:remove><D:prop>{removes}</D:prop></D:remove>" if removes else "")
        + "</D:propertyupdate>"
    )


def stored_properties(instance: Instance) -> list[str]:
    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(sqlalchemy.select(DeadProperty.name)))
    finally:
        engine.dispose()


def test_dead_property_caps(gateway: Gateway) -> None:
    s = gateway.session()
    url = f"{gateway.url}/documents/p.txt"
    assert s.put(url, data=b"x").status_code == 201

    def refused(body: str, code: str) -> None:
        r = s.request("PROPPATCH", url, data=body.encode())
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (507, code), r.text
        assert audited(gateway, r) == [("PROPPATCH", 507, code)]

    # Over each cap in one request: none of the request is stored.
    many = {f"p{i}": "v" for i in range(MAX_DEAD_PROPERTIES + 1)}
    refused(proppatch_body(many), "too-many-properties")
    big = {"small": "v", "big": "a" * (MAX_DEAD_PROPERTY_BYTES + 1)}
    refused(proppatch_body(big), "property-too-large")
    total = {f"t{i}": "a" * (15 * 1024) for i in range(5)}  # 75 KiB, each under 16 KiB
    refused(proppatch_body(total), "properties-too-large")
    assert stored_properties(gateway.instance) == []

    # Up to the caps across requests, then one over: the earlier ones stay.
    fill = {f"p{i}": "v" for i in range(MAX_DEAD_PROPERTIES - 4)}
    assert s.request("PROPPATCH", url, data=proppatch_body(fill).encode()).status_code == 207
    refused(proppatch_body({f"q{i}": "v" for i in range(5)}), "too-many-properties")
    assert stored_properties(gateway.instance) == sorted(f"{{urn:x}}{n}" for n in fill)
    # Replacing and removing within the caps is fine.
    swap = proppatch_body({f"q{i}": "v" for i in range(5)}, remove=("p0", "p1"))
    assert s.request("PROPPATCH", url, data=swap.encode()).status_code == 207
    assert len(stored_properties(gateway.instance)) == MAX_DEAD_PROPERTIES - 1
    still_serving(gateway)


# --- deep COPY -----------------------------------------------------------


@pytest.fixture
def small_copy_gateway(instance: Instance) -> Iterator[Gateway]:
    data = instance.settings()
    data["limits"] = {"max_copy_members": 5, "max_copy_bytes": 8192}
    instance.write_settings(data)
    gw = start_in_process(instance)
    yield gw
    gw.stop()


def test_copy_of_a_large_folder_is_refused_before_anything_is_copied(
    small_copy_gateway: Gateway,
) -> None:
    gateway = small_copy_gateway
    s = gateway.session()
    base = f"{gateway.url}/documents"
    for folder, files in [
        ("many", {f"f{i}.txt": b"x" for i in range(6)}),  # 6 entries > 5
        ("heavy", {"a.bin": b"a" * 5000, "b.bin": b"b" * 5000}),  # > 8192 bytes
        ("fits", {"a.txt": b"a", "b.txt": b"b"}),
    ]:
        assert s.request("MKCOL", f"{base}/{folder}").status_code == 201
        for name, body in files.items():
            assert s.put(f"{base}/{folder}/{name}", data=body).status_code == 201
    # A nested tree counts every entry below the folder.
    assert s.request("MKCOL", f"{base}/deep").status_code == 201
    assert s.request("MKCOL", f"{base}/deep/a").status_code == 201
    assert s.request("MKCOL", f"{base}/deep/a/b").status_code == 201
    for i in range(4):
        assert s.put(f"{base}/deep/a/b/{i}.txt", data=b"x").status_code == 201

    before = sorted(os.walk(gateway.instance.share_dir("documents")))
    for source, destination in [
        ("many", f"{base}/many-copy"),
        ("heavy", f"{base}/heavy-copy"),
        ("deep", f"{base}/deep-copy"),
        ("many", f"{gateway.url}/referrals/many-copy"),  # across shares: the same bound
    ]:
        r = s.request("COPY", f"{base}/{source}", headers={"Destination": destination})
        assert (r.status_code, r.headers.get("X-Clindav-Error")) == (507, "copy-too-large")
        assert audited(gateway, r) == [("COPY", 507, "copy-too-large")]
        assert s.request("PROPFIND", destination, headers={"Depth": "0"}).status_code == 404
    assert sorted(os.walk(gateway.instance.share_dir("documents"))) == before
    referrals = os.scandir(gateway.instance.share_dir("referrals"))
    assert [e for e in referrals if not e.name.startswith(".clindav-share.")] == []  # (marker)

    # Within the limits, and a Depth: 0 copy of a large folder (the folder alone).
    r = s.request("COPY", f"{base}/fits", headers={"Destination": f"{base}/fits-copy"})
    assert r.status_code == 201
    assert s.get(f"{base}/fits-copy/b.txt").content == b"b"
    r = s.request("COPY", f"{base}/many", headers={"Destination": f"{base}/empty", "Depth": "0"})
    assert r.status_code == 201
    still_serving(gateway)
