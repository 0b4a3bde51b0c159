"""The pipeline contract against the running gateway: third-party stages via
entry points, option validation at start-up, and the audit observer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import sqlalchemy
import yaml

from gateway.settings import load_settings
from tests.conftest import CLINDAV, REPO, Gateway, Instance, start_gateway

PLUGIN = """
from typing import ClassVar
from pydantic import BaseModel, ConfigDict
from gateway.errors import UnprocessableContent
from gateway.pipeline import BaseStage, PutContext


class WordOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    word: str


class ForbiddenWord(UnprocessableContent):
    code = "forbidden-word"
    message = "The file contains a word this share refuses."


class WordFilter(BaseStage):
    name: ClassVar[str] = "word-filter"
    Options: ClassVar[type[BaseModel]] = WordOptions

    def on_put(self, ctx: PutContext) -> None:
        if self.options.word.encode() in ctx.body:
            raise ForbiddenWord("found the word")
        ctx.details["word-filter"] = "clean"
"""


def install_plugin(site: Path) -> None:
    """A real distribution on sys.path: a module plus dist-info with an entry point."""
    site.mkdir()
    (site / "clindav_word_filter.py").write_text(PLUGIN)
    dist = site / "clindav_word_filter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: clindav-word-filter\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[clindav.plugins]\nword-filter = clindav_word_filter:WordFilter\n"
    )


def use_stage(instance: Instance, options: dict) -> int:
    """Append the plugin stage to the documents pipeline; returns its position."""
    policy_path = instance.folder / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    stages = policy["shares"]["documents"]["stages"]
    stages.append({"word-filter": options})
    policy_path.write_text(yaml.safe_dump(policy))
    return len(stages) - 1


def test_entry_point_stage_runs_in_the_gateway(
    instance: Instance, tmp_path: Path, monkeypatch
) -> None:
    site = tmp_path / "site"
    install_plugin(site)
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{site}")
    use_stage(instance, {"word": "FORBIDDEN"})
    gw = start_gateway(instance)
    try:
        s = gw.session()
        refused = s.put(f"{gw.url}/documents/a.txt", data=b"has FORBIDDEN inside")
        assert refused.status_code == 422
        assert refused.headers["X-Clindav-Error"] == "forbidden-word"
        assert s.get(f"{gw.url}/documents/a.txt").status_code == 404
        assert s.put(f"{gw.url}/documents/a.txt", data=b"harmless").status_code == 201
    finally:
        gw.stop()
    events = audit_rows(instance, "PUT")
    assert [(e.status, e.code) for e in events] == [(422, "forbidden-word"), (201, "stored")]
    assert events[1].details["word-filter"] == "clean"


def test_bad_stage_options_stop_start_up(instance: Instance, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site)
    position = use_stage(instance, {"wrod": "typo"})
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    proc = subprocess.run(
        [*CLINDAV, "serve", "--config", str(instance.config), "--port", "0", "--no-tls"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert (
        f"policy.yaml: shares.documents.stages.{position}.word-filter.wrod: unknown option"
        in proc.stderr
    )


def audit_rows(instance: Instance, action: str) -> list:
    from gateway.db import AuditEvent

    engine = sqlalchemy.create_engine(load_settings(instance.config).sqlalchemy_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(AuditEvent)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.seq)
            )
            return list(rows)
    finally:
        engine.dispose()


def test_every_outcome_is_audited_once(gateway: Gateway) -> None:
    s = gateway.session()
    assert s.put(f"{gateway.url}/documents/ok.txt", data=b"fine").status_code == 201
    assert s.get(f"{gateway.url}/documents/ok.txt").status_code == 200
    assert s.get(f"{gateway.url}/documents/missing.txt").status_code == 404
    assert gateway.session("audrey").get(f"{gateway.url}/documents/ok.txt").status_code == 403
    assert (
        gateway.session("alice", "wrong password!").get(f"{gateway.url}/documents/").status_code
        == 401
    )
    puts = audit_rows(gateway.instance, "PUT")
    gets = audit_rows(gateway.instance, "GET")
    logins = audit_rows(gateway.instance, "LOGIN")
    assert [(e.actor, e.status, e.code) for e in puts] == [("alice", 201, "stored")]
    assert [(e.actor, e.status, e.code) for e in gets] == [
        ("alice", 200, "ok"),
        ("alice", 404, "not-found"),
        ("audrey", 403, "policy-denied"),
    ]
    assert all(
        e.logical_path in ("/ok.txt", "/missing.txt") and e.share == "documents" for e in gets
    )
    assert [(e.status, e.client) for e in logins] == [(401, "127.0.0.1")]
    assert "wrong password" not in repr(logins[0]) and "wrong password" not in gateway.log()
