"""The console's trash, holds and users pages over plain HTTP (requests).

What a browser test does not show: which groups reach which page and
action (also by typing the address), that every refusal changes nothing and
is audited, that a change and its audit event commit together, and that no
password hash ever reaches a page.  The browser tests
(tests/browser/test_console_admin_pages.py) drive the same pages in Chromium.
"""

from __future__ import annotations

import sqlite3

import requests
import sqlalchemy

from gateway.db import LegalHold, LocalUser
from tests.conftest import PASSWORD, Gateway, Instance, start_in_process
from tests.integration.test_consent import PATIENT, consent
from tests.integration.test_console_http import database, form_token, sign_in
from tests.integration.test_dav_methods import small_jpeg
from tests.integration.test_ldap_group_map import with_group_map
from tests.integration.test_trash import engine_for, trash_list

CLINICAL = f"/clinical/{PATIENT}"


def post(
    s: requests.Session, gateway: Gateway, address: str, /, **data: object
) -> requests.Response:
    """A console form sent as a browser sends it: with a token from a page it was given."""
    page = s.get(f"{gateway.url}/app/trash")
    fields = {"csrf_token": form_token(page.text), **data}
    return s.post(f"{gateway.url}/app{address}", data=fields, allow_redirects=False)


def listed(gateway: Gateway, user: str, password: str = PASSWORD) -> int:
    """The status of a WebDAV listing of /documents/ by ``user``."""
    dav = gateway.session(user, password)
    return dav.request("PROPFIND", f"{gateway.url}/documents/", headers={"Depth": "0"}).status_code


def rows(instance: Instance, sql: str, *args: object) -> list[tuple]:
    with database(instance) as db:
        return db.execute(sql, args).fetchall()


def count(instance: Instance, model: type) -> int:
    engine = engine_for(instance)
    with engine.connect() as conn:
        found = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(model))
        total = int(found.scalar_one())
    engine.dispose()
    return total


def test_pages_and_actions_are_only_for_their_groups(gateway: Gateway) -> None:
    inst = gateway.instance
    alice, audrey = sign_in(gateway, "alice"), sign_in(gateway, "audrey")
    menu = alice.get(f"{gateway.url}/app/trash").text
    assert ">Trash<" in menu and ">Audit<" not in menu and ">Users<" not in menu
    for path in ("/audit", "/audit/patient", "/holds", "/users", "/users/alice"):
        r = alice.get(f"{gateway.url}/app{path}", allow_redirects=False)
        assert r.status_code == 403 and r.headers["X-Clindav-Error"] == "page-not-allowed", path
    forms: dict[str, dict[str, object]] = {
        "/audit": {"patient": PATIENT},
        "/audit/patient": {"patient": PATIENT},
        "/audit/verify": {},
        "/holds": {"path": CLINICAL, "reason": "x"},
        "/users": {"name": "mallory", "groups": "admins", "password": PASSWORD, "again": PASSWORD},
        "/users/alice/groups": {"groups": "admins"},
        "/users/root-admin/disable": {},
    }
    for path, data in forms.items():
        r = post(alice, gateway, path, **data)
        assert r.status_code == 403 and r.headers["X-Clindav-Error"] == "page-not-allowed", path
    # Auditors read the audit trail, and nothing else of an admin's.
    assert audrey.get(f"{gateway.url}/app/audit").status_code == 200
    assert post(audrey, gateway, "/audit/patient", patient=PATIENT).status_code == 200
    for path in ("/holds", "/users"):
        assert audrey.get(f"{gateway.url}/app{path}").status_code == 403
    assert post(audrey, gateway, "/users/alice/disable").status_code == 403
    # Nothing changed, and every refusal is on record.
    assert count(inst, LegalHold) == 0
    assert rows(inst, "SELECT name, groups, disabled FROM local_user WHERE name IN "
                "('alice', 'root-admin', 'mallory') ORDER BY name") == [
        ("alice", '["clinicians"]', 0), ("root-admin", '["admins"]', 0),
    ]  # fmt: skip
    refused = rows(inst, "SELECT actor FROM audit_event WHERE code = 'page-not-allowed'")
    assert [a for (a,) in refused].count("alice") == 5 + len(forms)


def test_forms_without_their_token_change_nothing(gateway: Gateway) -> None:
    admin = sign_in(gateway, "root-admin")
    for path, data in (
        ("/holds", {"path": CLINICAL, "reason": "x"}),
        ("/users", {"name": "mallory", "groups": "admins", "password": PASSWORD}),
        ("/users/alice/disable", {}),
        ("/audit", {"patient": PATIENT}),
    ):
        r = admin.post(f"{gateway.url}/app{path}", data=data, allow_redirects=False)
        assert r.status_code == 400 and r.headers["X-Clindav-Error"] == "form-token-invalid"
    assert count(gateway.instance, LegalHold) == 0
    assert rows(gateway.instance, "SELECT disabled FROM local_user WHERE name = 'alice'") == [(0,)]
    assert not rows(gateway.instance, "SELECT 1 FROM local_user WHERE name = 'mallory'")


def test_holds_with_the_command_lines_rules_and_messages(gateway: Gateway) -> None:
    inst, admin = gateway.instance, sign_in(gateway, "root-admin")
    consent(inst, "--scope", "record")
    dav = gateway.session("alice")
    assert dav.request("MKCOL", f"{gateway.url}{CLINICAL}").status_code == 201
    assert dav.put(f"{gateway.url}{CLINICAL}/a.jpg", data=small_jpeg()).status_code == 201
    refusals = {
        (CLINICAL, ""): (400, "Placing a legal hold needs a reason"),
        (f"{CLINICAL}/none.jpg", "x"): (404, f"Nothing exists at {CLINICAL}/none.jpg, in the"),
        ("/nowhere/1", "x"): (404, "No share holds &#39;/nowhere/1&#39;."),
    }
    for (path, reason), (status, message) in refusals.items():
        r = post(admin, gateway, "/holds", path=path, reason=reason)
        assert r.status_code == status and message in r.text, r.text
        assert 'class="problem"' in r.text
    assert count(inst, LegalHold) == 0

    r = post(admin, gateway, "/holds", path=CLINICAL, reason="complaint 2026-031")
    assert r.status_code == 303
    page = admin.get(f"{gateway.url}/app/holds").text
    assert f"{CLINICAL} is under a legal hold." in page and "complaint 2026-031" in page
    again = post(admin, gateway, "/holds", path=CLINICAL, reason="again")
    assert again.status_code == 409
    assert "is already under a legal hold (by root-admin: complaint 2026-031)." in again.text
    assert dav.delete(f"{gateway.url}{CLINICAL}/a.jpg").status_code == 403  # the hold works
    gone = post(admin, gateway, "/holds/release", path=f"{CLINICAL}/a.jpg", reason="x")
    assert gone.status_code == 404 and f"There is no legal hold on {CLINICAL}/a.jpg" in gone.text
    assert post(admin, gateway, "/holds/release", path=CLINICAL, reason="").status_code == 400
    assert count(inst, LegalHold) == 1
    assert post(admin, gateway, "/holds/release", path=CLINICAL, reason="closed").status_code == 303
    assert count(inst, LegalHold) == 0
    assert dav.delete(f"{gateway.url}{CLINICAL}/a.jpg").status_code == 204

    # Placed and released by the admin, for the patient, like the command line's.
    events = rows(inst, "SELECT action, actor, code, patient_id, reason, status FROM audit_event "
                  "WHERE action IN ('HOLD', 'RELEASE') ORDER BY seq")  # fmt: skip
    assert [e for e in events if e[5] == 200] == [
        ("HOLD", "root-admin", "hold", PATIENT, "complaint 2026-031", 200),
        ("RELEASE", "root-admin", "release", PATIENT, "closed", 200),
    ]
    assert {e[2] for e in events if e[5] >= 400} == {
        "reason-required", "not-found", "hold-exists", "hold-not-found",
    }  # fmt: skip


def test_trash_shows_each_user_their_own_and_admins_all(gateway: Gateway) -> None:
    inst = gateway.instance
    alice_dav, ivy_dav = gateway.session("alice"), gateway.session("ivy")
    for s, name in ((alice_dav, "a.txt"), (ivy_dav, "i.txt"), (alice_dav, "taken.txt")):
        assert s.put(f"{gateway.url}/documents/{name}", data=b"x").status_code == 201
        assert s.delete(f"{gateway.url}/documents/{name}").status_code == 204
    items = {i["path"]: i["id"] for i in trash_list(inst)}
    alice, admin = sign_in(gateway, "alice"), sign_in(gateway, "root-admin")
    mine = alice.get(f"{gateway.url}/app/trash").text
    assert "/a.txt" in mine and "/taken.txt" in mine and "/i.txt" not in mine
    assert all(p in admin.get(f"{gateway.url}/app/trash").text for p in items)

    # Someone else's item is not found, by its page or by its form; purging is for admins.
    assert alice.get(f"{gateway.url}/app/trash/{items['/i.txt']}").status_code == 404
    r = post(alice, gateway, f"/trash/{items['/i.txt']}/restore")
    assert r.status_code == 404 and r.headers["X-Clindav-Error"] == "trash-item-not-found"
    r = post(alice, gateway, f"/trash/{items['/a.txt']}/purge")
    assert r.status_code == 403 and r.headers["X-Clindav-Error"] == "page-not-allowed"
    assert len(trash_list(inst)) == 3

    # Restoring onto an existing file: refused with the CLI's message, or sent to the trash.
    assert alice_dav.put(f"{gateway.url}/documents/taken.txt", data=b"new").status_code == 201
    r = post(alice, gateway, f"/trash/{items['/taken.txt']}/restore")
    assert r.status_code == 409
    assert "Something already exists where the item would be restored." in r.text
    assert alice_dav.get(f"{gateway.url}/documents/taken.txt").content == b"new"
    r = post(alice, gateway, f"/trash/{items['/taken.txt']}/restore", to="/taken-old.txt")
    assert r.status_code == 303
    assert alice_dav.get(f"{gateway.url}/documents/taken-old.txt").content == b"x"
    r = post(alice, gateway, f"/trash/{items['/a.txt']}/restore")
    assert r.status_code == 303
    assert "Restored documents:/a.txt." in alice.get(gateway.url + r.headers["Location"]).text
    restored = rows(
        inst, "SELECT actor, code, user_agent FROM audit_event WHERE action = 'RESTORE'"
    )
    assert [r[:2] for r in restored] == [
        ("alice", "trash-item-not-found"), ("alice", "restore-target-exists"),
        ("alice", "restored"), ("alice", "restored"),
    ]  # fmt: skip

    # The admin purges for good: the item and its key are gone.
    r = post(admin, gateway, f"/trash/{items['/i.txt']}/purge", reason="duplicate")
    assert r.status_code == 303
    assert trash_list(inst) == []
    assert rows(inst, "SELECT actor, code, reason FROM audit_event WHERE action = 'PURGE'") == [
        ("alice", "page-not-allowed", "alice (clinicians) may not use purging from the trash"),
        ("root-admin", "purged", "duplicate"),
    ]


def test_restore_needs_the_policys_write_where_files_go_back(gateway: Gateway) -> None:
    """An admin may see an item the policy lets them read, but not write back there."""
    inst = gateway.instance
    policy = inst.folder / "policy.yaml"
    text = policy.read_text()
    policy.write_text(text.replace(
        "rules:\n",
        "rules:\n  - name: admins-only-read-documents\n    share: documents\n"
        "    groups: [admins]\n    methods: [write]\n    effect: deny\n",
    ))  # fmt: skip
    gw = start_in_process(inst)
    try:
        dav = gw.session("alice")
        assert dav.put(f"{gw.url}/documents/a.txt", data=b"x").status_code == 201
        assert dav.delete(f"{gw.url}/documents/a.txt").status_code == 204
        item = trash_list(inst)[0]["id"]
        admin = sign_in(gw, "root-admin")
        assert "/a.txt" in admin.get(f"{gw.url}/app/trash").text
        r = post(admin, gw, f"/trash/{item}/restore")
        assert r.status_code == 403 and "policy does not allow this" in r.text
        assert len(trash_list(inst)) == 1
    finally:
        gw.stop()


def test_users_with_the_command_lines_rules_and_messages(gateway: Gateway) -> None:
    inst, admin = gateway.instance, sign_in(gateway, "root-admin")
    before = rows(inst, "SELECT name, password_hash, groups, disabled FROM local_user")
    bad = {
        (
            "bo b",
            "clinicians",
            PASSWORD,
            PASSWORD,
        ): "User names are letters, digits and . _ @ - (up to 128).",
        ("bob", "", PASSWORD, PASSWORD): "A user needs at least one group.",
        ("bob", "Clinicians!", PASSWORD, PASSWORD): "Invalid group name &#39;Clinicians!&#39;.",
        ("bob", "clinicians", "short", "short"): "Passwords need at least 12 characters.",
        (
            "bob",
            "clinicians",
            PASSWORD,
            PASSWORD + "x",
        ): "The passwords differ; nothing was changed.",
        ("alice", "clinicians", PASSWORD, PASSWORD): "User &#39;alice&#39; already exists.",
    }
    for (name, group, password, again), message in bad.items():
        r = post(
            admin, gateway, "/users", name=name, other_groups=group, password=password, again=again
        )
        assert r.status_code in (400, 409) and message in r.text, (name, r.text)
        assert 'class="problem"' in r.text
    assert rows(inst, "SELECT name, password_hash, groups, disabled FROM local_user") == before

    r = post(admin, gateway, "/users", name="bob", groups=["clinicians"],
             other_groups="receptionists", password=PASSWORD, again=PASSWORD)  # fmt: skip
    assert r.status_code == 303 and r.headers["Location"].endswith("/app/users/bob")
    page = admin.get(f"{gateway.url}/app/users/bob").text
    assert "The policy names no group receptionists: it gives this user nothing." in page
    assert listed(gateway, "bob") == 207

    new = "another correct horse battery"
    assert post(admin, gateway, "/users/bob/password", password=new, again=new).status_code == 303
    assert listed(gateway, "bob") == 401
    assert listed(gateway, "bob", new) == 207
    assert post(admin, gateway, "/users/bob/groups", groups=["auditors"]).status_code == 303
    assert (
        gateway.session("bob", new).put(f"{gateway.url}/documents/b.txt", data=b"b").status_code
        == 403
    )
    assert post(admin, gateway, "/users/bob/disable").status_code == 303
    assert listed(gateway, "bob", new) == 401
    assert post(admin, gateway, "/users/bob/enable").status_code == 303
    assert post(admin, gateway, "/users/nobody/disable").status_code == 404

    # No page ever shows a password hash.
    hashes = [h for (h,) in rows(inst, "SELECT password_hash FROM local_user")]
    for path in ("/users", "/users/bob", "/users/alice"):
        text = admin.get(f"{gateway.url}/app{path}").text
        assert not any(h in text or h.split("$")[-1] in text for h in hashes)
    events = rows(inst, "SELECT action, status, code, details FROM audit_event "
                  "WHERE action LIKE 'USER-%' AND status = 200 ORDER BY seq")  # fmt: skip
    assert [e[0] for e in events] == [
        "USER-ADD", "USER-PASSWORD", "USER-GROUPS", "USER-DISABLE", "USER-ENABLE",
    ]  # fmt: skip
    assert all('"user": "bob"' in e[3] and PASSWORD not in e[3] and new not in e[3] for e in events)


def test_a_user_change_whose_audit_event_fails_is_not_made(gateway: Gateway) -> None:
    inst, admin = gateway.instance, sign_in(gateway, "root-admin")
    page = admin.get(f"{gateway.url}/app/users/alice")
    with sqlite3.connect(inst.folder / "clindav.db") as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        )
    r = admin.post(
        f"{gateway.url}/app/users/alice/disable",
        data={"csrf_token": form_token(page.text)},
        allow_redirects=False,
    )
    assert r.status_code == 503
    assert rows(inst, "SELECT disabled FROM local_user WHERE name = 'alice'") == [(0,)]
    assert count(inst, LocalUser) == 4


def test_with_a_directory_the_users_page_changes_nothing(gateway: Gateway) -> None:
    """Signed in while the store was local; the settings now name LDAP (as after a move)."""
    inst = gateway.instance
    admin = sign_in(gateway, "root-admin")
    gateway.stop()
    with_group_map(inst, "      admins: [practice-admins]")
    gw = start_in_process(inst)
    try:
        page = admin.get(f"{gw.url}/app/users")
        assert page.status_code == 200, page.text
        assert "managed in the directory" in page.text and "alice" not in page.text
        r = post(admin, gw, "/users", name="bob", groups=["clinicians"],
                 password=PASSWORD, again=PASSWORD)  # fmt: skip
        assert r.status_code == 409 and r.headers["X-Clindav-Error"] == "accounts-in-directory"
        assert count(inst, LocalUser) == 4
    finally:
        gw.stop()
