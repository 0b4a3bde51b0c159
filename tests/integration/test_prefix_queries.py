"""Rows "at or below a folder" are found by an exact, case-sensitive prefix range
(``gateway.db.starts_with``) that the database answers from an index."""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from gateway.db import StoredObject, starts_with
from gateway.settings import load_settings
from tests.conftest import Gateway, run_cli

PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
    "<Z:note>keep me</Z:note></D:prop></D:set></D:propertyupdate>"
)


@pytest.mark.parametrize("instance", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_folder_leaves_its_other_case_twin_alone(gateway: Gateway) -> None:
    """``/Case`` and ``/case`` are two folders: deleting one must not take the
    other's registry rows or dead properties along (SQLite's LIKE did)."""
    s, base = gateway.session(), f"{gateway.url}/documents"
    for folder in ("Case", "case"):
        assert s.request("MKCOL", f"{base}/{folder}").status_code == 201
    assert s.put(f"{base}/Case/a.txt", data=b"upper").status_code == 201
    assert s.put(f"{base}/case/b.txt", data=b"lower").status_code == 201
    assert s.request("PROPPATCH", f"{base}/case/b.txt", data=PROPPATCH).status_code == 207
    assert s.delete(f"{base}/Case").status_code == 204
    trashed = json.loads(run_cli("trash", "list", "--json", config=gateway.instance.config).stdout)
    assert [(item["path"], item["files"]) for item in trashed] == [("/Case", 1)]
    assert s.get(f"{base}/case/b.txt").content == b"lower"
    props = s.request("PROPFIND", f"{base}/case/b.txt", headers={"Depth": "0"})
    assert "keep me" in props.text
    listing = s.request("PROPFIND", f"{base}/case/", headers={"Depth": "1"}).text
    assert listing.count("<D:href>/documents/case/b.txt</D:href>") == 1


def test_a_folder_prefix_is_an_index_range_on_sqlite(gateway: Gateway) -> None:
    url = load_settings(gateway.instance.config).sqlalchemy_url()
    engine = sqlalchemy.create_engine(url)
    query = sqlalchemy.select(StoredObject.logical_path).where(
        StoredObject.share == "clinical", starts_with(StoredObject.logical_path, "/9434765919/")
    )
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    try:
        with engine.connect() as conn:
            plan = " ".join(
                str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            )
    finally:
        engine.dispose()
    assert "logical_path>" in plan and "logical_path<" in plan, plan
