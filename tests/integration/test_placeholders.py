"""Placeholders a refused upload leaves (issue 16 point 6), against the running gateway.

A LOCK on a new name stores a 0-byte placeholder (davfs2 and Explorer lock
before they PUT).  When the PUT is then refused, the placeholder stays: it is
visible only to its creator and admins, and the sweeper removes it once it
is older than ``trash.placeholder_max_age``, audited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.conftest import Gateway, Instance, start_in_process
from tests.integration.test_consent import audit
from tests.integration.test_dav_methods import small_jpeg

PATIENT = "9434765919"
LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>davfs2</D:owner></D:lockinfo>"
)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def refused_upload(s: requests.Session, url: str) -> None:
    """What davfs2 does: LOCK the new name, PUT into it; here the PUT is refused."""
    locked = s.request("LOCK", url, data=LOCKINFO, headers={"Timeout": "Second-600"})
    assert locked.status_code == 201, locked.text
    token = locked.headers["Lock-Token"]
    put = s.put(url, data=png(), headers={"If": f"({token})"})  # a PNG named .jpg
    assert put.status_code == 415 and put.headers["X-Clindav-Error"] == "extension-mismatch"


def names(s: requests.Session, folder: str) -> set[str]:
    listing = s.request("PROPFIND", folder, headers={"Depth": "1"})
    assert listing.status_code == 207
    return {n for n in ("scan.jpg", "real.jpg") if f"/{n}</" in listing.text}


def set_trash(instance: Instance, **values: object) -> None:
    settings = instance.settings()
    settings.setdefault("trash", {}).update(values)
    instance.write_settings(settings)


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and ".clindav-" not in str(p)]


def test_a_placeholder_is_seen_only_by_its_creator_and_admins(instance: Instance) -> None:
    instance.add_user("bob", "clinicians")
    gw = start_in_process(instance)
    try:
        alice, bob, admin = gw.session("alice"), gw.session("bob"), gw.session("root-admin")
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert alice.request("MKCOL", folder).status_code == 201
        refused_upload(alice, f"{folder}/scan.jpg")
        assert names(alice, folder) == {"scan.jpg"}
        assert alice.get(f"{folder}/scan.jpg").content == b""
        assert names(admin, folder) == {"scan.jpg"}
        # Another clinician: not listed, not there (404, as for a name never used).
        assert names(bob, folder) == set()
        assert bob.get(f"{folder}/scan.jpg").status_code == 404
        probe = bob.request("PROPFIND", f"{folder}/scan.jpg", headers={"Depth": "0"})
        assert probe.status_code == 404
        # With the default age (an hour) the sweeper leaves it alone.
        assert names(alice, folder) == {"scan.jpg"}
    finally:
        gw.stop()


def test_the_sweeper_removes_old_placeholders_audited(instance: Instance) -> None:
    set_trash(instance, sweep_interval=1, placeholder_max_age="1s")
    gw = start_in_process(instance)
    try:
        alice = gw.session("alice")
        folder = f"{gw.url}/clinical/{PATIENT}"
        assert alice.request("MKCOL", folder).status_code == 201
        assert alice.put(f"{folder}/real.jpg", data=small_jpeg()).status_code == 201
        refused_upload(alice, f"{folder}/scan.jpg")
        deadline = time.monotonic() + 120  # a bound for a sweeper that never comes
        while "scan.jpg" in names(alice, folder) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert names(alice, folder) == {"real.jpg"}  # a finished upload is never swept
        assert len(files_in(instance.share_dir("clinical"))) == 1
        swept = [
            (e.action, e.code, e.actor, e.reason)
            for e in audit(instance)
            if e.logical_path == f"/{PATIENT}/scan.jpg" and e.actor == "clindav-scheduler"
        ]
        reason = "placeholder: upload never completed"
        assert swept == [
            ("DELETE", "trashed", "clindav-scheduler", reason),
            ("PURGE", "purged", "clindav-scheduler", reason),
        ]
    finally:
        gw.stop()


@dataclasses.dataclass
class ClockAt:
    when: dt.datetime

    def now(self) -> dt.datetime:
        return self.when


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_only_placeholders_older_than_the_age_are_swept(gateway: Gateway) -> None:
    """The age boundary, driven through the clock rather than by waiting."""
    from gateway.app import build_services
    from gateway.records.scheduler import sweep_placeholders, system_actor
    from gateway.settings import load_settings

    alice = gateway.session("alice")
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert alice.request("MKCOL", folder).status_code == 201
    refused_upload(alice, f"{folder}/scan.jpg")
    # A placeholder the real upload replaced is a finished image: never swept.
    locked = alice.request("LOCK", f"{folder}/real.jpg", data=LOCKINFO)
    token = locked.headers["Lock-Token"]
    assert alice.put(f"{folder}/real.jpg", data=small_jpeg(), headers={"If": f"({token})"}).ok
    services = build_services(load_settings(gateway.instance.config), sweep_temp_files=False)
    start = dt.datetime.now(dt.UTC)
    for later, expected in ((dt.timedelta(minutes=50), []), (dt.timedelta(minutes=70), ["x"])):
        at = dataclasses.replace(services, clock=ClockAt(start + later))
        swept = sweep_placeholders(at, system_actor("PURGE"))
        assert [path for _share, path in swept] == [f"/{PATIENT}/scan.jpg" for _ in expected]
    assert names(alice, folder) == {"real.jpg"}
