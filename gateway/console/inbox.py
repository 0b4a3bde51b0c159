"""The inbox: images held until consent is recorded, for their uploader (admins: all).

Each held image shows its thumbnail, patient, uploader, age and the date it
will be purged if consent never comes (``held_until``, the consent stage's
``hold_window``).  Recording consent for the patient (the consent form,
gateway/console/patient.py) releases all of the patient's held images, as
``clindav consent add`` does.  Below, the patients' submissions through the
user's upload links (gateway/console/upload_requests.py).  The page view is
audited as ``VIEW`` with the number of images and submissions shown.
"""

from __future__ import annotations

import itertools

from flask import Blueprint, Flask, render_template

from gateway.console.context import attempt, audit, principal, services
from gateway.console.layout import add_to_menu, everyone, held_for
from gateway.console.library import ImageEntry
from gateway.console.upload_requests import recent_submissions

pages = Blueprint("inbox", __name__)


def register(app: Flask) -> None:
    app.register_blueprint(pages)
    add_to_menu(app, "inbox.index", "Inbox", everyone)


@pages.route("/", methods=["GET"])
def index() -> str:
    attempt("VIEW", page="inbox")
    held = held_for(principal())
    submissions = recent_submissions(principal())
    audit(images=len(held), submissions=len(submissions))
    by_patient = [
        (patient, list(images))
        for patient, images in itertools.groupby(
            sorted(held, key=_patient_key), key=lambda image: image.patient
        )
    ]
    return render_template(
        "inbox.html",
        by_patient=by_patient,
        count=len(held),
        submissions=submissions,
        now=services().clock.now(),
    )


def _patient_key(image: ImageEntry) -> tuple[str, float]:
    assert image.held_until is not None
    return (image.patient or "", image.held_until.timestamp())
