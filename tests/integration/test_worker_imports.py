"""Acceptance (issue 21): a serving process loads heavy libraries only where used.

A worker builds its services and its WSGI app as ``clindav serve`` does: no
Flask (nor Jinja2's forms, WTForms) until the first console request, no
redis-py unless ``locks.storage`` names a Redis, no libheif until a HEIC
is met, no ldap3 with local accounts, no Alembic at the newest schema.  What
that saves is measured by ``python -m bench --only idle`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_cli

# Builds the app from the config named in argv[1], lists the modules, then
# answers one console request and lists them again.
SERVE_AND_LIST = """
import json, sys
from pathlib import Path
from werkzeug.test import Client
from gateway.app import build_app, build_services
from gateway.settings import load_settings
app = build_app(build_services(load_settings(Path(sys.argv[1]))))
before = sorted(sys.modules)
status = Client(app).get("/app/sign-in", headers={"Accept": "text/html"}).status_code
print(json.dumps({"before": before, "status": status, "after": sorted(sys.modules)}))
"""
NOT_UNTIL_USED = ("flask", "flask_wtf", "wtforms", "redis", "pillow_heif", "ldap3", "alembic")


def roots(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules} & set(NOT_UNTIL_USED)


def test_a_worker_loads_flask_at_its_first_console_request_only(tmp_path: Path) -> None:
    run_cli("init", str(tmp_path / "instance"))
    result = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST, str(tmp_path / "instance" / "clindav.yaml")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"wsgidav", "gateway.dav.provider"} <= set(report["before"])  # the app was built
    assert roots(report["before"]) == set(), roots(report["before"])
    assert report["status"] == 200  # the sign-in page, from the console made just now
    assert roots(report["after"]) == {"flask", "flask_wtf", "wtforms"}
