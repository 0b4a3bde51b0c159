"""The EHR consent manifest: consent recorded through the same drop as the images.

An EHR system (or a script) PUTs ``clindav-consent.json`` into a patient
folder, before the images it concerns.  The manifest is validated, recorded
in the consent registry (releasing that patient's held images), audited, and
answered ``201`` with a JSON body; it is never stored as a file.  Format
(docs/CONSENT.md)::

    {"patient": "9434765919", "source_system": "EHR-X",
     "consent": {"scopes": ["record", "share"], "given_by": "patient",
                 "method": "written", "form": "EHR-X/doc/881", "intimate": false,
                 "given_by_name": null, "date_of_birth": "1990-04-01",
                 "valid_until": "2027-01-01", "recorded_by": "dr.smith", "note": ""}}

or ``{"patient": ..., "consent_id": 12}`` to confirm an existing record.
The body may come with a Content-Length or chunked (at most
:data:`MAX_MANIFEST` bytes either way); unknown fields are refused by name.
Bad manifests answer 400 ``invalid-consent`` (or ``invalid-patient-id``) with
the reason, and the refusal is audited like any other.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

from gateway.errors import Forbidden
from gateway.patients import PatientScheme
from gateway.pipeline import RequestInfo
from gateway.records.consent import ConsentService, InvalidConsent, NewConsent, end_of_validity
from gateway.services import Services

MANIFEST_NAME = "clindav-consent.json"
MAX_MANIFEST = 64 * 1024
StartResponse = Callable[..., Any]


class ManifestNotAllowed(Forbidden):
    code = "manifest-not-allowed"
    message = "This share takes no consent manifests, or you may not record consent."


def is_manifest(method: str, path: str) -> bool:
    return method == "PUT" and path.rstrip("/").rsplit("/", 1)[-1] == MANIFEST_NAME


def handle_manifest(
    environ: dict[str, Any],
    start_response: StartResponse,
    services: Services,
    share: str,
    path: str,
) -> Iterator[bytes]:
    request: RequestInfo = environ["clindav.request"]
    stage = services.policy.pipeline(share).find("consent")
    scheme_spec = getattr(stage.options, "patients", None) if stage else None
    principal = request.principal
    recorders = set(services.policy.doc.consent_recorders)
    if scheme_spec is None or principal is None or not recorders & principal.groups:
        raise ManifestNotAllowed(f"{share}: no patient scheme, or user not in {sorted(recorders)}")
    segments = [s for s in path.split("/") if s]
    scheme = PatientScheme(scheme_spec)
    folder_patient = scheme.check(segments[0]) if len(segments) == 2 else None
    data = _read_json(environ)
    patient = scheme.normalise(str(data.get("patient", "")))
    if folder_patient != patient:
        raise InvalidConsent(
            "manifest patient differs from its folder",
            public="The manifest must sit in the folder of the patient it names.",
        )
    service = ConsentService(services)
    if "consent_id" in data:
        if not isinstance(data["consent_id"], int):
            raise InvalidConsent(
                "consent_id not an integer",
                public="consent_id must be the number of a consent record.",
            )
        view = service.get(data["consent_id"])
        if view.record.patient_id != patient:
            raise InvalidConsent(
                "consent record of another patient",
                public="That consent record belongs to another patient.",
            )
    else:
        view = service.add(_new_consent(data, patient), scheme, request)
    body = json.dumps(
        {"consent_id": view.record.id, "active_scopes": sorted(view.active_scopes)}
    ).encode()
    start_response(
        "201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return iter([body])


# Every field a manifest may carry: anything else is refused by name, so a
# typo ("intimte") or a field clindav does not know cannot be lost silently.
MANIFEST_FIELDS = frozenset({"patient", "source_system", "consent", "consent_id"})
CONSENT_FIELDS = frozenset(
    {
        "scopes",
        "given_by",
        "given_by_name",
        "method",
        "form",
        "intimate",
        "date_of_birth",
        "valid_until",
        "recorded_by",
        "note",
    }
)


def _read_body(environ: dict[str, Any]) -> bytes:
    """The manifest's bytes, with a Content-Length or chunked; never more than MAX_MANIFEST.

    A chunked body has no length up front: at most one byte over the limit is
    read, and a longer one is refused (the server closes the connection on
    the unread rest).  The middleware already refused a malformed length.
    """
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        if int(length) > MAX_MANIFEST:
            raise _too_large()
        return bytes(stream.read(int(length)))
    data = b""
    while len(data) <= MAX_MANIFEST:
        block = stream.read(MAX_MANIFEST + 1 - len(data))
        if not block:
            break
        data += block
    if len(data) > MAX_MANIFEST:
        raise _too_large()
    return data


def _too_large() -> InvalidConsent:
    return InvalidConsent(
        f"manifest over {MAX_MANIFEST} bytes", public="The consent manifest is too large."
    )


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(_read_body(environ) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidConsent(
            "manifest is not JSON", public="The consent manifest is not valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise InvalidConsent(
            "manifest is not an object", public="The consent manifest must be a JSON object."
        )
    unknown = sorted(set(data) - MANIFEST_FIELDS)
    if isinstance(data.get("consent"), dict):
        unknown += sorted(f"consent.{name}" for name in set(data["consent"]) - CONSENT_FIELDS)
    if unknown:
        raise InvalidConsent(
            f"unknown manifest fields {unknown}",
            public=f"Unknown consent manifest field(s): {', '.join(unknown)}. "
            "See docs/CONSENT.md for the fields a manifest may carry.",
        )
    if "consent" in data and "consent_id" in data:
        raise InvalidConsent(
            "both consent and consent_id",
            public="A manifest carries either 'consent' or 'consent_id', not both.",
        )
    return data


def _new_consent(data: dict[str, Any], patient: str) -> NewConsent:
    fields = data.get("consent")
    if not isinstance(fields, dict):
        raise InvalidConsent(
            "no consent object", public="The manifest needs 'consent' or 'consent_id'."
        )
    try:
        scopes = fields.get("scopes") or []
        intimate = fields.get("intimate", False)
        if not isinstance(scopes, list) or not isinstance(intimate, bool):
            raise TypeError("scopes must be a list, intimate true or false")
        return NewConsent(
            patient_id=patient,
            scopes=tuple(str(scope) for scope in scopes),
            given_by=str(fields.get("given_by", "")),
            method=str(fields.get("method", "")),
            recorded_by=str(fields.get("recorded_by", "")),
            given_by_name=fields.get("given_by_name"),
            form_reference=fields.get("form"),
            intimate=intimate,
            date_of_birth=_date(fields, "date_of_birth"),
            valid_until=end_of_validity(_date(fields, "valid_until")),
            source=str(data.get("source_system", "manifest"))[:255],
            note=str(fields.get("note", "")),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidConsent(
            f"bad field: {exc}", public="A consent manifest field has the wrong type or format."
        ) from None


def _date(fields: dict[str, Any], name: str) -> dt.date | None:
    value = fields.get(name)
    return dt.date.fromisoformat(value) if value is not None else None
