"""The patient's pages at ``/upload/<token>``: no account, mobile first, no JavaScript needed.

Pages, in order (docs/PATIENT-UPLOADS.md):

1. ``GET /upload/<token>``: the practice's name and the date-of-birth form.
2. ``POST /upload/<token>``: the date of birth; right, the statement, the
   consent and teaching boxes, the parental-responsibility option and the
   file chooser, with the *pass* the send must carry (a hidden field: no
   cookie is set anywhere on these pages); wrong, the form again with the
   tries left.
3. ``POST /upload/<token>/send``: the photos; the result page per photo.

Before anything: the per-address and per-link limits
(gateway/uploads/throttle.py), and for the send the declared body length
against ``max files x uploads.max_file_bytes`` (413 before a byte is read).
A photo is never written to disk while it arrives (each file is spooled in
memory and stops being kept past ``uploads.max_file_bytes``).  The link's
state and every step are the services' (gateway/records/upload_access.py for the
link, date of birth and pass; gateway/records/upload_requests.py for the submission);
filing is gateway/uploads/submission.py.  Every refusal is a page in plain
words with the code and request id, audited; the pages name nothing about
the patient but the practice and the clinician's note (shown only after the
date of birth).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Callable, Iterable
from typing import IO, Any, ClassVar

from flask import Flask, Request, current_app, g, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Response

from gateway.dav.limits import LengthRequired
from gateway.db import UploadRequest
from gateway.errors import (
    BadRequest,
    ClindavError,
    DatabaseUnavailable,
    NotFound,
    PayloadTooLarge,
    from_os_error,
)
from gateway.pipeline import RequestInfo
from gateway.records.consent_terms import parse_day
from gateway.records.upload_access import AuditedRefusal, LinkAccess, link_principal
from gateway.records.upload_requests import UploadRequestService
from gateway.server.responses import request_id
from gateway.services import Services
from gateway.uploads import submission
from gateway.uploads.throttle import UploadThrottle

log = logging.getLogger("clindav.uploads")
EXTENSION = "clindav.uploads"
FORM_ALLOWANCE = 1024 * 1024  # the form's own fields and multipart framing
DOB_FORM_LIMIT = 4096
Page = tuple[str, int, dict[str, str]]


class UploadTooLarge(PayloadTooLarge):
    code = "upload-too-large"
    message = "The photos are larger than this link accepts together."


class TooManyPhotos(BadRequest):
    code = "upload-too-many-photos"
    message = "Too many photos for this link."


class NoPhotos(BadRequest):
    code = "upload-no-photos"
    message = "Choose at least one photo to send."


class InvalidDate(BadRequest):
    code = "upload-invalid-date"
    message = "Enter the date of birth as day, month and year, for example 27 3 1985."


class BoundedSpool(io.BytesIO):
    """One file of the form, in memory; past ``limit`` bytes it keeps nothing, only the count."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.received = 0

    def write(self, data: Any) -> int:
        self.received += len(data)
        if self.received > self.limit:
            if self.tell():
                self.seek(0)
                self.truncate(0)
            return len(data)
        return super().write(data)

    @property
    def too_large(self) -> bool:
        return self.received > self.limit


class PhotoRequest(Request):
    """Werkzeug's request, its files spooled in memory (never a temp file on disk)."""

    file_limit: ClassVar[int] = 25 * 1024 * 1024

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return BoundedSpool(self.file_limit)


def create_uploads(services: Services) -> Callable[..., Iterable[bytes]]:
    """The patient pages as a WSGI app, mounted at ``/upload`` (gateway/uploads/mount.py)."""
    settings = services.settings.uploads
    app = Flask("gateway.uploads", static_url_path="/static")
    app.request_class = type(
        "LinkPhotoRequest", (PhotoRequest,), {"file_limit": settings.max_file_bytes}
    )
    app.config.update(
        MAX_CONTENT_LENGTH=body_limit(settings.max_files, settings.max_file_bytes),
        # Text fields are small; werkzeug applies this to its read buffer too (64 KiB reads).
        MAX_FORM_MEMORY_SIZE=512 * 1024,
        MAX_FORM_PARTS=settings.max_files + 20,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    app.logger.disabled = True
    app.extensions[EXTENSION] = (
        UploadRequestService(services),
        UploadThrottle(
            services.sessions, services.clock, settings.address_rate, settings.link_rate
        ),
        LinkAccess(services),
    )
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    app.before_request(_begin)
    app.add_url_rule("/<token>", "link", _link, methods=["GET", "POST"])
    app.add_url_rule("/<token>/send", "send", _send, methods=["POST"])
    app.after_request(_finish)
    app.register_error_handler(AuditedRefusal, lambda exc: _page(exc.refusal))
    app.register_error_handler(ClindavError, _refused)
    app.register_error_handler(SQLAlchemyError, _database_failed)
    app.register_error_handler(OSError, _storage_failed)
    app.register_error_handler(HTTPException, _http_error)
    return app.wsgi_app


def body_limit(max_files: int, max_file_bytes: int) -> int:
    return max_files * max_file_bytes + FORM_ALLOWANCE


def _service() -> UploadRequestService:
    found: UploadRequestService = current_app.extensions[EXTENSION][0]
    return found


def _access() -> LinkAccess:
    found: LinkAccess = current_app.extensions[EXTENSION][2]
    return found


def _begin() -> None:
    g.request_id = request_id(request.environ)
    if request.endpoint == "static":
        return
    throttle: UploadThrottle = current_app.extensions[EXTENSION][1]
    token = (request.view_args or {}).get("token")
    throttle.check(request.remote_addr or "-", token)
    if request.method == "POST":
        _check_declared_length()


def _check_declared_length() -> None:
    """Before a byte of the body is read: the photos' limit, or a date of birth's."""
    declared = request.content_length
    if declared is None:
        raise LengthRequired(f"{request.path}: no Content-Length")
    limit = DOB_FORM_LIMIT if request.endpoint == "link" else _photos_limit()
    if declared > limit:
        raise UploadTooLarge(f"{request.path}: declared {declared} > {limit}")


def _photos_limit() -> int:
    """The link's own number of photos at ``uploads.max_file_bytes`` each, plus the form."""
    token = (request.view_args or {}).get("token", "")
    files = _access().limit_for(token) or _service().settings.max_files
    return body_limit(files, _service().settings.max_file_bytes)


def _finish(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "-")
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _info(row: UploadRequest | None = None) -> RequestInfo:
    services = _service().services
    principal = link_principal(services, row) if row is not None else None
    return RequestInfo(
        request_id=g.request_id,
        principal=principal,
        client=request.remote_addr or "-",
        user_agent=request.headers.get("User-Agent", "")[:255],
        method=request.method,
    )


def _practice() -> str:
    return _service().settings.practice_name


def _link(token: str) -> Page:
    access = _access()
    if request.method != "POST":  # GET, and HEAD as Flask answers it
        access.open(token, _info())
        return _render("dob.html", 200, token=token)
    try:
        dob = _entered_dob()
    except InvalidDate as refusal:
        return _render("dob.html", 400, token=token, error=refusal.public_message)
    try:
        row, secret = access.verify_dob(token, dob, _info())
    except AuditedRefusal as refused:
        if refused.refusal.code != "upload-dob-mismatch":
            raise
        return _render("dob.html", 403, token=token, error=refused.refusal.public_message)
    return _send_form(token, row, secret, 200)


def _entered_dob() -> dt.date:
    form = request.form
    try:
        day, month, year = (int(form.get(k, "").strip()) for k in ("day", "month", "year"))
        return parse_day(f"{year:04d}-{month:02d}-{day:02d}")
    except ValueError:
        raise InvalidDate("unreadable date of birth") from None


def _send_form(token: str, row: UploadRequest, secret: str, status: int, error: str = "") -> Page:
    return _render(
        "send.html",
        status,
        token=token,
        secret=secret,
        note=row.note,
        max_files=row.max_files,
        intimate=row.intimate,
        max_mb=_service().settings.max_file_bytes // (1024 * 1024),
        statement=f"statement-{submission.STATEMENT_VERSION}.html",
        error=error,
        form=request.form,
    )


def _send(token: str) -> Page:
    service = _service()
    row = _access().passed(token, lambda: request.form.get("pass", ""), _info())
    answer = _consent_answer()
    photos = [_photo(f) for f in request.files.getlist("photos") if f.filename]
    problem = _form_problem(answer, photos, row)
    if problem is not None:
        service.record_refusal(row, problem, _info(row))
        secret = request.form.get("pass", "")
        return _send_form(token, row, secret, problem.status, problem.public_message)
    info = _info(row)
    submission.check_ready(service.services)  # a failing gateway: 503, the link unused
    service.claim(row, info)
    try:
        consent_id = submission.record_consent(service.services, row, answer, info)
        results = submission.store_photos(service.services, row, photos, info)
    except Exception as failure:
        if not (isinstance(failure, ClindavError) and failure.status < 500):
            service.release(row, info)  # the gateway's failure, not the patient's: they may retry
        raise
    service.finish(row.id, consent_id, results, info)
    return _render("results.html", 200, results=results)


def _consent_answer() -> submission.ConsentAnswer:
    form = request.form
    parent = form.get("parent_name", "") if form.get("given_by") == "parent" else None
    return submission.ConsentAnswer(
        agreed=form.get("consent") == "yes",
        teaching=form.get("teaching") == "yes",
        parent_name=parent,
    )


def _photo(file: Any) -> submission.Photo:
    spool = file.stream
    if isinstance(spool, BoundedSpool) and spool.too_large:
        return submission.Photo(file.filename, None, spool.received)
    body = spool.getvalue() if isinstance(spool, io.BytesIO) else spool.read()
    return submission.Photo(file.filename, body, len(body))


def _form_problem(
    answer: submission.ConsentAnswer, photos: list[submission.Photo], row: UploadRequest
) -> ClindavError | None:
    """What keeps the form from being filed (nothing is recorded or stored then)."""
    try:
        answer.check()
    except ClindavError as problem:
        return problem
    if not photos:
        return NoPhotos("no files chosen")
    if len(photos) > row.max_files:
        return TooManyPhotos(
            f"{len(photos)} > {row.max_files}",
            public=f"This link takes up to {row.max_files} photos; choose fewer and send again.",
        )
    return None


def _render(template: str, status: int, **context: Any) -> Page:
    page = render_template(template, practice=_practice(), **context)
    return page, status, {}


def _page(refusal: ClindavError) -> Page:
    page, status, headers = _render(
        "message.html", refusal.status, refusal=refusal, request_id=g.get("request_id", "-")
    )
    return page, status, {**headers, "X-Clindav-Error": refusal.code}


def _refused(refusal: ClindavError) -> Page:
    """A refusal the service did not record yet: recorded now (503 if it cannot be)."""
    if refusal.status >= 500:
        log.error("request %s: %s %s", g.get("request_id"), refusal.code, refusal.detail)
    audit = _service().services.audit
    return _page(audit.record_refusal(_info(), refusal, action="UPLOAD", path=None))


def _database_failed(exc: SQLAlchemyError) -> Page:
    log.error("request %s: database error: %s", g.get("request_id"), exc)
    return _refused(DatabaseUnavailable(f"database: {type(exc).__name__}"))


def _storage_failed(exc: OSError) -> Page:
    """A full share is 507, an unwritable one 503 (gateway/errors.py), as over WebDAV."""
    known = from_os_error(exc)
    if known is None:
        log.error("request %s failed", g.get("request_id"), exc_info=exc)
        known = ClindavError(type(exc).__name__)
    return _refused(known)


def _http_error(exc: HTTPException) -> Page:
    if isinstance(exc, RequestEntityTooLarge):
        return _refused(UploadTooLarge(f"{request.path}: body over the limit"))
    if exc.code == 404:
        return _refused(NotFound(f"{request.path}"))
    if exc.code == 405:
        return _refused(BadRequest(f"{request.method} {request.path}"))
    original = getattr(exc, "original_exception", None)
    if original is not None:
        log.error("request %s failed", g.get("request_id"), exc_info=original)
    return _refused(ClindavError(type(exc).__name__))
