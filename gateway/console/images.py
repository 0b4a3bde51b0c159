"""Images by file id: a page, the full-size picture and a thumbnail.

Addresses name the file id (a random UUID), never the patient or the path.
Each answer is refused as WebDAV's GET of the same file would be (the
policy's ``read``, a share that is not mounted, another user's held image:
gateway/console/library.py), audited as a ``GET`` of the file's share and
path with its patient (``view``: ``page``, ``full``, ``thumbnail``) before
the first byte leaves, and sent with ``Cache-Control: no-store``.  Pictures
are made in memory (gateway/console/imaging.py); other files (videos,
documents) are streamed as stored, documents as downloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import BinaryIO

from flask import Blueprint, Flask, Response, flash, g, redirect, render_template, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.context import (
    attempt,
    audit,
    audit_refusal,
    current_attempt,
    principal,
    request_info,
    services,
    state,
)
from gateway.console.forms import CopyForm, options
from gateway.console.imaging import for_browser, thumbnail
from gateway.console.library import (
    ImageEntry,
    copy_targets,
    copy_to_share,
    lookup,
    open_plaintext,
    require_readable,
)
from gateway.errors import ClindavError
from gateway.records.patientpaths import patient_of

pages = Blueprint("images", __name__)
_BLOCK = 1024 * 1024
_ANY_ID = uuid.UUID(int=0)


def register(app: Flask) -> None:
    app.register_blueprint(pages)


def readable(file_id: uuid.UUID, view: str) -> ImageEntry:
    """The image, if this user may read it; the attempt is noted for the audit trail."""
    image, private = lookup(services(), principal(), str(file_id))
    patient = patient_of(services(), image.share, image.path)
    attempt("GET", share=image.share, path=image.path, patient=patient, view=view)
    require_readable(services(), principal(), image, private)
    return image


@pages.app_template_global()
def image_url(file_id: str, endpoint: str = "images.page") -> str:
    """``url_for(endpoint, file_id=file_id)``, the route built once per request and endpoint:
    a page of 500 tiles (two addresses each) spent a third of its time building them."""
    built: dict[str, str] = g.setdefault("image_urls", {})
    if endpoint not in built:
        built[endpoint] = url_for(endpoint, file_id=_ANY_ID)
    return built[endpoint].replace(str(_ANY_ID), file_id)


@pages.route("/images/<uuid:file_id>", methods=["GET"])
def page(file_id: uuid.UUID) -> str:
    image = readable(file_id, "page")
    audit()
    return _page(image, _copy_form(image))


def _page(image: ImageEntry, copy_form: CopyForm | None, copy_error: str | None = None) -> str:
    return render_template(
        "image.html",
        image=image,
        copy_form=copy_form,
        copy_error=copy_error,
        now=services().clock.now(),
    )


def _copy_form(image: ImageEntry) -> CopyForm | None:
    """The copy form, for an image that is not held (held images stay where they are)."""
    targets = copy_targets(services(), image)
    if image.held_until is not None or not targets:
        return None
    form = CopyForm()
    form.share.choices = options(targets)
    if form.name.data is None:
        form.name.data = image.name
    return form


@pages.route("/images/<uuid:file_id>/copy", methods=["POST"])
def copy(file_id: uuid.UUID) -> WerkzeugResponse | tuple[str, int]:
    """A copy into referrals or teaching: WebDAV COPY's checks, its ``COPY`` event."""
    image = readable(file_id, "copy")
    form = _copy_form(image) or CopyForm()
    target = (form.share.data or "", form.name.data or "")
    attempt(
        "COPY",
        share=image.share,
        path=image.path,
        patient=current_attempt().patient,
        to=f"{target[0]}:/{target[1].strip()}",
    )
    try:
        path = copy_to_share(services(), request_info(), state().lock_manager, image, target)
    except ClindavError as refusal:
        if refusal.status >= 500:
            raise
        audit_refusal(refusal)
        return _page(image, form, refusal.public_message), refusal.status
    flash(f"Copied to {target[0]} as {path}.")
    return redirect(url_for("images.page", file_id=image.file_id), 303)


@pages.route("/images/<uuid:file_id>/thumbnail", methods=["GET"])
def small(file_id: uuid.UUID) -> Response:
    image = readable(file_id, "thumbnail")
    with open_plaintext(services(), image) as plain:
        data = thumbnail(plain.read())
    audit()
    return Response(data, mimetype="image/jpeg")


@pages.route("/images/<uuid:file_id>/full", methods=["GET"])
def full(file_id: uuid.UUID) -> Response:
    image = readable(file_id, "full")
    plain = open_plaintext(services(), image)
    if image.is_picture:
        with plain:
            data, content_type = for_browser(plain.read())
        audit()
        return Response(data, mimetype=content_type)
    audit()  # before the first byte
    response = Response(_blocks(plain), mimetype=image.content_type)
    if not image.content_type.startswith("video/"):
        response.headers["Content-Disposition"] = "attachment"
    return response


def _blocks(plain: BinaryIO) -> Iterator[bytes]:
    with plain:
        while block := plain.read(_BLOCK):
            yield block
