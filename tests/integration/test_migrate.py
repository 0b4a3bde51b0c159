"""``clindav migrate`` against real legacy shares, a real database and the running gateway.

Legacy shares come from :mod:`tests.legacy_share`: plaintext photos with GPS
and planted markers in patient folders, documents, client junk, and one file
for every reason a file must stay where it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import sqlalchemy

from gateway.crypto.fileformat import MAGIC
from gateway.db import Base, StoredObject
from gateway.settings import load_settings
from plugins.formats import scrubber_for, sniff
from plugins.scrub.base import ScrubOptions
from tests.conftest import (
    CLINDAV,
    Gateway,
    Instance,
    _env,
    make_instance,
    run_cli,
    start_in_process,
)
from tests.legacy_share import (
    MARKER,
    PATIENTS,
    LegacyShare,
    build_clinical,
    build_documents,
    build_small,
)

_SCRUBBER = {"jpeg": "jpeg", "png": "png", "heif": "heif"}


def migrate(inst: Instance, share: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("migrate", share, *args, config=inst.config, check=False)


def expected_stored(data: bytes) -> bytes:
    """What the clinical pipeline stores for a legacy file: images scrubbed (capture date kept)."""
    fmt = _SCRUBBER.get(sniff(data[:32]) or "")
    return scrubber_for(fmt).clean(data, ScrubOptions()).data if fmt else data


def url_of(gw: Gateway, share: str, logical: str) -> str:
    return f"{gw.url}/{share}{quote(logical)}"


def registry(inst: Instance, share: str) -> dict[str, str]:
    engine = sqlalchemy.create_engine(load_settings(inst.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(StoredObject.logical_path, StoredObject.sha256).where(
                    StoredObject.share == share
                )
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def db_state(inst: Instance) -> dict[str, object]:
    """Row count of every table and the audit chain head."""
    engine = sqlalchemy.create_engine(load_settings(inst.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            state: dict[str, object] = {
                name: conn.execute(
                    sqlalchemy.select(sqlalchemy.func.count()).select_from(table)
                ).scalar_one()
                for name, table in Base.metadata.tables.items()
            }
            state["audit_head"] = tuple(
                conn.execute(sqlalchemy.text("SELECT seq, mac FROM audit_head"))
            )
    finally:
        engine.dispose()
    return state


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes (folders: "dir")."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def legacy_on_disk(share: LegacyShare) -> dict[str, bytes]:
    """Files without the CLDV header still on the share, by logical path (NFC)."""
    found = {}
    for folder, dirs, files in os.walk(share.root):
        dirs[:] = [d for d in dirs if not d.startswith(".clindav-")]
        for name in files:
            path = Path(folder) / name
            if path.read_bytes()[:4] != MAGIC and not name.startswith(".clindav-"):
                logical = "/" + unicodedata.normalize("NFC", str(path.relative_to(share.root)))
                found[logical] = path.read_bytes()
    return found


def assert_nothing_readable(share: LegacyShare, extra_needles: list[bytes]) -> None:
    """The scan of test_backing_share_holds_nothing_readable, except the files left on purpose."""
    left = {share.root / p.lstrip("/") for p in share.left}
    keep_dirs = {parent for p in left for parent in p.parents}
    content_needles = [b"\xff\xd8\xff", b"\x89PNG", b"ftyp", b"Exif", MARKER, b"Referral"]
    content_needles += [p.encode() for p in PATIENTS] + extra_needles
    name_needles = [p.encode() for p in PATIENTS] + extra_needles
    checked = 0
    for folder, dirs, files in os.walk(share.root):
        for name in dirs:
            if Path(folder) / name not in keep_dirs:
                found = [n for n in name_needles if n.decode() in name]
                assert not found, f"folder {name} names {found}"
        for name in files:
            path = Path(folder) / name
            if path in left:
                continue
            assert not any(n.decode() in name for n in name_needles), name
            data = path.read_bytes()
            assert data[:4] == MAGIC or name == "lock", f"{name} is not CLDV"
            found = [n for n in content_needles if n in data]
            assert not found, f"{path.relative_to(share.root)} holds {found}"
            checked += 1
    assert checked
    assert not list((share.root / ".clindav-migrate" / "shred").iterdir())


def plain_files(root: Path) -> int:
    """Files still in plain patient folders (names of digits), without opening any."""
    return sum(
        len(files)
        for top in os.listdir(root)
        if top.isdigit()
        for _folder, _dirs, files in os.walk(root / top)
    )


def listing(root: Path) -> set[Path]:
    return {Path(folder) / name for folder, dirs, files in os.walk(root) for name in dirs + files}


def hrefs(body: bytes) -> set[str]:
    return {unquote(urlparse(h.text or "").path) for h in ET.fromstring(body).iter("{DAV:}href")}


def test_legacy_share_migrates_and_leaves_exactly_the_unmigratable(
    instance: Instance, tmp_path: Path
) -> None:
    clinical = build_clinical(instance.share_dir("clinical"))
    documents = build_documents(instance.share_dir("documents"))
    report_file = tmp_path / "clinical.json"
    result = migrate(instance, "clinical", "--jobs", "2", "--report", str(report_file))
    assert result.returncode == 1, result.stderr  # files were left: the report says why
    report = json.loads(report_file.read_text())
    assert report["workers"] == 2  # --jobs 2: two worker processes
    assert {(e["path"], e["code"]) for e in report["left"]} == set(clinical.left.items())
    assert all(e["message"] and e["status"] >= 400 for e in report["left"])
    assert {e["path"] for e in report["migrated"]} == set(clinical.migratable)
    assert {e["path"] for e in report["junk"]} == set(clinical.junk)
    assert {e["consent"] for e in report["migrated"]} == {"legacy-unverified"}
    assert {e["patient"] for e in report["migrated"]} == set(PATIENTS)
    assert "left: /1234567890/photo.jpg: invalid-patient-id" in result.stdout
    docs = migrate(instance, "documents", "--report", str(tmp_path / "documents.json"))
    assert docs.returncode == 0, docs.stdout + docs.stderr

    # On disk: ciphertext only, and the left files exactly as they were.
    # (Stored names are base32 [a-z2-7]: needles with a dot, hyphen, capital
    # or accent cannot match one by chance.)
    stems = [b"rash-left-arm", b"mole.png", b"mole-closeup", b"lesion.heic", b"wound-day1"]
    stems += ["ulcère".encode(), b"area.jpg", b"Thumbs", b"DS_Store", b"desktop.ini"]
    stems += [b"empty-folder", b"discharge", b"consent-form"]
    assert_nothing_readable(clinical, stems)
    assert_nothing_readable(documents, [*stems, b"letters", b"forms", b"%PDF"])
    assert legacy_on_disk(clinical) == clinical.left_data
    assert legacy_on_disk(documents) == {}

    gw = start_in_process(instance)
    try:
        alice, ivy = gw.session("alice"), gw.session("ivy")
        for logical, original in clinical.migratable.items():
            user = ivy if "/intimate/" in logical else alice
            got = user.get(url_of(gw, "clinical", logical))
            assert got.status_code == 200, logical
            assert MARKER not in got.content and b"GPS" not in got.content, logical
            assert got.content == expected_stored(original), logical
        for logical, original in documents.migratable.items():
            assert alice.get(url_of(gw, "documents", logical)).content == original
        listing = alice.request(
            "PROPFIND", f"{gw.url}/clinical/{PATIENTS[2]}/", headers={"Depth": "1"}
        )
        assert hrefs(listing.content) == {
            f"/clinical/{PATIENTS[2]}/",
            f"/clinical/{PATIENTS[2]}/wound-day1.jpg",
            f"/clinical/{PATIENTS[2]}/empty-folder/",
        }
    finally:
        gw.stop()

    pending = json.loads(run_cli("consent", "pending", "--json", config=instance.config).stdout)
    unverified = {r["path"] for r in pending if r["status"] == "legacy-unverified"}
    assert unverified == set(clinical.migratable)
    assert "audit chain intact" in run_cli("audit", "verify", config=instance.config).stdout
    # A second run has nothing left to do but report the same files.
    again = migrate(instance, "clinical", "--report", str(tmp_path / "again.json"))
    second = json.loads((tmp_path / "again.json").read_text())
    assert again.returncode == 1 and not second["migrated"] and not second["junk"]
    assert {(e["path"], e["code"]) for e in second["left"]} == set(clinical.left.items())


def test_sigkill_at_random_moments_then_rerun_ends_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    control, subject = make_instance(tmp_path / "control"), make_instance(tmp_path / "subject")
    expected = build_small(control.share_dir("clinical"))
    share = build_small(subject.share_dir("clinical"))
    assert migrate(control, "clinical").returncode == 1

    # Each run is killed once it has finished k files (k random, 0: once it
    # first changed the share) plus a random 0-15 ms, i.e. at a random step of
    # the files in flight; k is drawn so that the 20 kills are spread over
    # the migration and never reach its end.  The next run is the rerun.
    rng = random.Random(20260610)
    kills = runs = 0
    while kills < 20 and runs < 40:
        runs += 1
        before, waiting = listing(share.root), plain_files(share.root)
        done_before_kill = rng.randint(0, (waiting - len(share.left)) // (20 - kills + 1))
        proc = subprocess.Popen(
            [*CLINDAV, "migrate", "clinical", "--jobs", "2", "--config", str(subject.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # printed once the plan is made, just before work starts
        while proc.poll() is None and (
            listing(share.root) == before or plain_files(share.root) > waiting - done_before_kill
        ):
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.015))
        finished = proc.poll() is not None
        if not finished:
            proc.kill()
            kills += 1
        proc.wait(30)
        proc.stdout.close()
        if finished:
            break
    assert kills == 20, f"only {kills} kills landed before the migration finished"
    final = migrate(subject, "clinical", "--report", str(tmp_path / "final.json"))
    assert final.returncode == 1, final.stdout + final.stderr
    report = json.loads((tmp_path / "final.json").read_text())
    assert {(e["path"], e["code"]) for e in report["left"]} == set(share.left.items())

    # Same logical files with the same content, once each; the left ones untouched.
    assert registry(subject, "clinical") == registry(control, "clinical")
    assert set(registry(subject, "clinical")) == set(expected.migratable)
    assert legacy_on_disk(share) == share.left_data
    stored = [
        p
        for p in share.root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".clindav-") for part in p.relative_to(share.root).parts)
        and p.read_bytes()[:4] == MAGIC
    ]
    assert len(stored) == len(expected.migratable)
    assert not list((share.root / ".clindav-migrate" / "shred").iterdir())
    gws = [start_in_process(control), start_in_process(subject)]
    try:
        a, b = (gw.session("alice") for gw in gws)
        for logical in expected.migratable:
            got_a = a.get(url_of(gws[0], "clinical", logical))
            got_b = b.get(url_of(gws[1], "clinical", logical))
            assert got_a.status_code == got_b.status_code == 200, logical
            assert hashlib.sha256(got_a.content).digest() == hashlib.sha256(got_b.content).digest()
    finally:
        for gw in gws:
            gw.stop()


def test_dry_run_changes_no_byte_and_no_row(instance: Instance, tmp_path: Path) -> None:
    share = build_clinical(instance.share_dir("clinical"))
    before_tree, before_db = tree(instance.folder / "shares"), db_state(instance)
    result = migrate(instance, "clinical", "--dry-run", "--report", str(tmp_path / "dry.json"))
    assert result.returncode == 1, result.stderr
    assert "would migrate 7 files, would destroy 4 junk files, would leave 6" in result.stdout
    assert tree(instance.folder / "shares") == before_tree
    assert db_state(instance) == before_db
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["dry_run"] is True
    # What it announced is what a real run then does.
    migrate(instance, "clinical", "--report", str(tmp_path / "real.json"))
    real = json.loads((tmp_path / "real.json").read_text())
    for key in ("left", "migrated", "junk"):
        assert dry[key] == real[key], key
    assert {e["path"] for e in real["migrated"]} == set(share.migratable)


def test_legacy_files_are_hidden_and_counted_before_migration(
    instance: Instance, tmp_path: Path
) -> None:
    share = build_clinical(instance.share_dir("clinical"))
    count = len(share.migratable) + len(share.junk) + len(share.left)
    check = run_cli("check-config", config=instance.config)
    assert f"share clinical: {count} unmigrated legacy files" in check.stdout
    assert "share documents: 0 unmigrated legacy files" in check.stdout
    gw = start_in_process(instance)
    try:
        secrets = [MARKER, b"\xff\xd8\xff", b"Referral"]
        for user in ("alice", "root-admin"):
            s = gw.session(user)
            root = s.request("PROPFIND", f"{gw.url}/clinical/", headers={"Depth": "1"})
            assert root.status_code == 207
            assert hrefs(root.content) == {"/clinical/"}
            for logical in [*share.migratable, *share.left, *share.junk, f"/{PATIENTS[0]}/"]:
                for method in ("GET", "PROPFIND"):
                    r = s.request(method, url_of(gw, "clinical", logical), headers={"Depth": "0"})
                    # 404; 403 where the policy answers first (intimate), 414 for the long name
                    assert r.status_code in (403, 404, 414), (user, method, logical, r.status_code)
                    assert not any(n in r.content for n in secrets)
        deadline = time.monotonic() + 20
        while f"share clinical: {count} unmigrated legacy files" not in gw.log():
            assert time.monotonic() < deadline, gw.log()
            time.sleep(0.2)
        # A clinician stores a new photo where a legacy one waits: migrate keeps both apart.
        taken = f"/{PATIENTS[0]}/rash-left-arm.jpg"
        alice = gw.session("alice")
        assert alice.request("MKCOL", url_of(gw, "clinical", f"/{PATIENTS[0]}")).status_code == 201
        put = alice.put(url_of(gw, "clinical", taken), data=share.migratable[taken])
        assert put.status_code == 201
    finally:
        gw.stop()
    migrate(instance, "clinical", "--report", str(tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert (taken, "migrate-target-exists") in {(e["path"], e["code"]) for e in report["left"]}
    assert (share.root / taken.lstrip("/")).read_bytes() == share.migratable[taken]
