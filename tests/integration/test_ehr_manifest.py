"""The EHR drop as documented (issue 16 point 3), against the running gateway.

The example commands are read out of docs/CLIENTS.md and docs/CONSENT.md and
run with curl as written (only the host is this test gateway's), so the
documentation cannot drift from what the shipped default policy allows.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import (
    PASSWORD,
    REPO,
    Gateway,
    Instance,
    require_tool,
    run_cli,
    start_in_process,
)
from tests.integration.test_consent import audit
from tests.integration.test_dav_methods import small_jpeg

PATIENT = "9434765919"
DOC_HOST = "https://dav.example.org"


def fenced_block(doc: str, heading: str, lang: str, containing: str = "") -> str:
    """The first ``lang`` code block after ``heading`` in ``doc`` that contains ``containing``."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    for block in re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S):
        if containing in block:
            return str(block)
    raise AssertionError(f"no {lang} block with {containing!r} after {heading!r} in {doc}")


def run_doc_script(script: str, gw: Gateway, cwd: Path) -> str:
    assert DOC_HOST in script  # the only thing the test changes
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(DOC_HOST, gw.url)],
        cwd=cwd,
        env={"PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def manifest(**consent: object) -> dict:
    fields = {
        "scopes": ["record", "share"],
        "given_by": "patient",
        "method": "verbal",
        "recorded_by": "dr.smith",
        **consent,
    }
    return {"patient": PATIENT, "source_system": "EHR-X", "consent": fields}


def records(instance: Instance) -> list[dict]:
    return json.loads(run_cli("consent", "list", "--json", config=instance.config).stdout)


def test_the_documented_ehr_example_runs_as_written(instance: Instance, tmp_path: Path) -> None:

    require_tool("curl")
    instance.add_user("ehr-bot", "ehr-systems")
    gw = start_in_process(instance)
    try:
        work = tmp_path / "ehr"
        work.mkdir()
        (work / "consent.json").write_text(
            fenced_block("CONSENT.md", "## The EHR manifest", "json")
        )
        (work / "photo.jpg").write_bytes(small_jpeg())
        out = run_doc_script(
            fenced_block("CLIENTS.md", "## EHR systems and scripts", "sh", "MKCOL"), gw, work
        )
        recorded = json.loads(re.search(r"\{.*?\}", out).group(0))  # type: ignore[union-attr]
        assert recorded["active_scopes"] == ["record", "share"]
        # The photo's -w line: 201, no error code, the request id (bodies end without newlines).
        assert re.search(r"\}201  [0-9a-f]{16}\n", out), out
        # The consent came first, so the image is not held: another clinician sees it,
        # and the referral copy exists.
        alice = gw.session("alice")
        assert alice.get(f"{gw.url}/clinical/{PATIENT}/photo.jpg").status_code == 200
        assert alice.get(f"{gw.url}/referrals/{PATIENT}-photo.jpg").status_code == 200
        assert [(r["source"], r["form"]) for r in records(instance)] == [("EHR-X", "EHR-X/doc/881")]
        # docs/CONSENT.md's own command, into the folder the script made.
        again = run_doc_script(
            fenced_block("CONSENT.md", "## The EHR manifest", "sh", "consent.json"), gw, work
        )
        assert json.loads(again)["active_scopes"] == ["record", "share"]
        # The EHR account drops and refers; it reads, lists and deletes nothing.
        bot = gw.session("ehr-bot")
        photo = f"{gw.url}/clinical/{PATIENT}/photo.jpg"
        assert bot.get(photo).status_code == 403
        assert bot.request("PROPFIND", f"{gw.url}/clinical/{PATIENT}/").status_code == 403
        assert bot.delete(photo).status_code == 403
        assert bot.get(f"{gw.url}/referrals/{PATIENT}-photo.jpg").status_code == 403
        script_events = [e for e in audit(instance) if e.actor == "ehr-bot"][:6]
        assert [(e.action, e.status) for e in script_events] == [
            ("MKCOL", 201),
            ("CONSENT-ADD", 200),
            ("PUT", 201),
            ("PUT", 201),
            ("COPY", 201),
            ("CONSENT-ADD", 200),
        ]
    finally:
        gw.stop()


def test_a_chunked_manifest_is_recorded(gateway: Gateway) -> None:
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    body = json.dumps(manifest(note="sent chunked")).encode()
    r = s.put(f"{folder}/clindav-consent.json", data=chunked(body))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 201, r.text
    assert r.json()["active_scopes"] == ["record", "share"]
    assert [c["note"] for c in records(gateway.instance)] == ["sent chunked"]
    # Bounded all the same: a chunked manifest over 64 KiB is refused, nothing recorded.
    big = json.dumps(manifest(note="x" * 70_000)).encode()
    refused = s.put(f"{folder}/clindav-consent.json", data=chunked(big, 8192))
    assert refused.status_code == 400 and refused.headers["X-Clindav-Error"] == "invalid-consent"
    assert "too large" in refused.text
    assert len(records(gateway.instance)) == 1


def test_unknown_fields_are_refused_by_name(gateway: Gateway) -> None:
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    url = f"{folder}/clindav-consent.json"
    typo = s.put(url, data=json.dumps(manifest(intimte=True)))
    assert typo.status_code == 400 and typo.headers["X-Clindav-Error"] == "invalid-consent"
    assert "consent.intimte" in typo.text
    top = dict(manifest(), valid_until="2027-01-01", expires="soon")
    misplaced = s.put(url, data=json.dumps(top))
    assert misplaced.status_code == 400 and "expires, valid_until" in misplaced.text
    wrong_type = s.put(url, data=json.dumps(manifest(intimate="false")))
    assert wrong_type.status_code == 400 and "wrong type" in wrong_type.text
    assert records(gateway.instance) == []
    refusals = [e for e in audit(gateway.instance) if e.code == "invalid-consent"]
    assert len(refusals) == 3 and "intimte" in refusals[0].reason


def test_valid_until_in_a_manifest_ends_the_consent(gateway: Gateway) -> None:
    s = gateway.session()
    folder = f"{gateway.url}/clinical/{PATIENT}"
    assert s.request("MKCOL", folder).status_code == 201
    ended = s.put(
        f"{folder}/clindav-consent.json", data=json.dumps(manifest(valid_until="2020-01-01"))
    )
    assert ended.status_code == 201, ended.text
    [record] = records(gateway.instance)
    assert str(record["valid_until"]).startswith("2020-01-01")
    # A consent that ended covers nothing: the image waits for a new one (held).
    put = s.put(f"{folder}/rash.jpg", data=small_jpeg())
    assert put.status_code == 201
    held = json.loads(
        run_cli("consent", "pending", "--json", config=gateway.instance.config).stdout
    )
    assert [h["path"] for h in held] == [f"/{PATIENT}/rash.jpg"]
    bad = s.put(f"{folder}/clindav-consent.json", data=json.dumps(manifest(valid_until="soon")))
    assert bad.status_code == 400 and bad.headers["X-Clindav-Error"] == "invalid-consent"
