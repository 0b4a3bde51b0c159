"""Issue 5: what the consent stage costs an upload.

Three fresh clindav instances, identical but for the consent stage, take the
same PUTs of the 4 MB phone JPEG at C=1 into ``/clinical/9434765919/``,
interleaved (order alternating per repetition):

* ``clindav-consent``: the default policy, whose clinical share runs
  ``filetype``, ``consent`` (``missing: hold``) and ``scrub``; no consent is
  recorded for the patient, so every photo is kept on hold (what the main
  loads measure too);
* ``clindav-consented``: the same, with consent recorded for the patient
  (``clindav consent add``), so the stage finds the record and nothing is held;
* ``clindav-no-consent``: its ``policy.yaml`` with the clinical share's
  ``consent`` stage removed.

Either way the stage's check is one indexed query per PUT
(``gateway/records/consent.py`` ``ConsentService.views``: consent records of the
patient, outer-joined to their withdrawals, by ``patient_id``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from bench import compare, loads, peers, report
from bench.loads import PUT_OK, PhaseSpec, Scale

WITH, CONSENTED, WITHOUT = "clindav-consent", "clindav-consented", "clindav-no-consent"
PATIENT_ID = loads.PATIENT.rsplit("/", 1)[1]
LOAD = "put_4mb_c1"


def remove_consent_stage(config: Path) -> list[str]:
    """Drop the clinical share's consent stage from the instance's policy.yaml; the stages left."""
    policy_path = config.parent / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    stages = policy["shares"]["clinical"]["stages"]
    kept = [s for s in stages if "consent" not in s]
    if len(kept) == len(stages):
        raise RuntimeError(f"{policy_path}: the clinical share has no consent stage to remove")
    policy["shares"]["clinical"]["stages"] = kept
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return [next(iter(s)) for s in kept]


def record_consent(config: Path) -> subprocess.Popen[str]:
    """Start ``clindav consent add`` for the bench patient (record scope, verbal, by the
    patient); the caller waits for it with :func:`finish`."""
    return subprocess.Popen(
        [
            *peers.CLINDAV,
            "consent",
            "add",
            "--patient",
            PATIENT_ID,
            "--scope",
            "record",
            "--given-by",
            "patient",
            "--method",
            "verbal",
            "--recorded-by",
            "bench",
            "--config",
            str(config),
        ],
        cwd=config.parent,
        env=peers._clindav_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    output = proc.communicate(timeout=180)[0]
    if proc.returncode != 0:
        raise RuntimeError(f"clindav consent add failed ({proc.returncode}):\n{output[-2000:]}")


def consent_queries(config: Path) -> dict[str, Any]:
    """The SQL the consent stage's check runs for one PUT, and SQLite's plan for each.

    ``ConsentService.covering`` (what ``plugins/consent.py`` calls per PUT) on the
    instance's own services, with every statement it sends captured.
    """
    from sqlalchemy import event

    from gateway.app import build_services
    from gateway.records.consent import ConsentService
    from gateway.settings import load_settings

    services = build_services(load_settings(config))
    engine = services.sessions.kw["bind"]
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        found = ConsentService(services).covering(PATIENT_ID, "record")
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    plans = []
    with engine.connect() as conn:
        for statement, params in captured:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            plans.append([row[-1] for row in rows])
    engine.dispose()
    return {
        "statements": len(captured),
        "sql": [" ".join(statement.split())[:400] for statement, _ in captured],
        "plans": plans,
        "found_record": found is not None,
    }


def consent_comparison(work: Path, photo: bytes, scale: Scale, reps: int) -> dict[str, Any]:
    """PUT 4 MB at C=1 with and without the consent stage; ratios and their spread."""
    began = time.monotonic()
    with_config = peers.new_instance(work, WITH)
    consented_config = peers.new_instance(work, CONSENTED)
    without_config = peers.new_instance(work, WITHOUT)
    stages_left = remove_consent_stage(without_config)
    adding = record_consent(consented_config)  # runs while the servers start
    auth = (peers.USER, peers.PASSWORD)
    try:
        running = peers.start_many(
            [
                (with_config, WITH, auth),
                (consented_config, CONSENTED, auth),
                (without_config, WITHOUT, auth),
            ]
        )
    finally:
        finish(adding)
    try:
        for peer in running:
            loads.prepare_photos(peer, photo, 1)
            loads.warm_up(peer, photo)

        def specs(rep: int) -> list[PhaseSpec]:
            return [
                PhaseSpec(
                    LOAD,
                    1,
                    scale.consent_puts,
                    loads.put_photo(photo, 3000 + rep),
                    PUT_OK,
                    loads.delete_photos(3000 + rep, 1, scale.consent_puts),
                )
            ]

        print("[bench] consent stage comparison", flush=True)
        raw = compare.interleaved(running, specs, reps)
    finally:
        for peer in running:
            peer.stop()
    try:
        queries = consent_queries(consented_config)
    except Exception as exc:  # a figure for the report, not a reason to lose the rest
        queries = {"error": f"{type(exc).__name__}: {exc}"}
    ratios = {
        peer: compare.ratio_summary(raw, LOAD, peer, WITHOUT, "mb_s") for peer in (WITH, CONSENTED)
    }
    cpu = {
        peer: compare.ratio_summary(raw, LOAD, peer, WITHOUT, "cpu_ms_per_req")
        for peer in (WITH, CONSENTED)
    }
    return {
        "instances": {
            WITH: "default policy (filetype, consent missing: hold, scrub); no consent recorded",
            CONSENTED: "default policy; consent (record scope) recorded for the patient",
            WITHOUT: f"clinical stages without consent: {', '.join(stages_left)}",
        },
        "raw": raw,
        "summary": report.summarise_loads(raw),
        "ratios": ratios,
        "cpu_ratios": cpu,
        "query": "one indexed query per PUT: gateway/records/consent.py ConsentService.views "
        "(consent_record by patient_id, outer join consent_withdrawal)",
        "queries_per_check": queries,
        "errors": compare.errors_in(raw),
        "duration_s": time.monotonic() - began,
    }
