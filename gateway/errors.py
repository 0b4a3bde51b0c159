"""The one exception tree of clindav.

Every refusal the gateway can give is a :class:`ClindavError` subclass carrying
an HTTP status, a kebab-case ``code`` and a fixed public ``message``.  The public
message is the only text a client ever sees; ``detail`` is internal (it may name
paths, patient ids or library errors) and goes only to the log, tagged with the
request id.  Error codes are part of the interface: tests, audit entries and
docs/ERRORS.md name them.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import ClassVar


class ClindavError(Exception):
    """Base of every error clindav raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    message: ClassVar[str] = "The gateway could not complete the request."

    def __init__(self, detail: str = "", *, public: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail
        # A subclass may refine the public text per instance, but only with
        # text the caller composed for the public (never library output).
        self.public_message = public or self.message


class BadRequest(ClindavError):
    status = 400
    code = "bad-request"
    message = "The request is malformed."


class InvalidPath(BadRequest):
    code = "invalid-path"
    message = "The path is not allowed."


class IncompleteBody(BadRequest):
    code = "incomplete-body"
    message = "The request body ended before the declared length."


class AuthenticationRequired(ClindavError):
    status = 401
    code = "authentication-required"
    message = "Authentication is required."


class Forbidden(ClindavError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class PolicyDenied(Forbidden):
    code = "policy-denied"
    message = "The share's policy does not allow this for your groups."


class NotFound(ClindavError):
    status = 404
    code = "not-found"
    message = "Not found."


class Conflict(ClindavError):
    status = 409
    code = "conflict"
    message = "The request conflicts with the current state."


class PayloadTooLarge(ClindavError):
    status = 413
    code = "payload-too-large"
    message = "The request body is larger than this share accepts."


class UnsupportedMediaType(ClindavError):
    status = 415
    code = "unsupported-media-type"
    message = "This kind of file is not accepted here."


class UnprocessableContent(ClindavError):
    status = 422
    code = "unprocessable-content"
    message = "The file could not be processed safely."


class ServiceUnavailable(ClindavError):
    status = 503
    code = "service-unavailable"
    message = "The gateway cannot protect this request right now; nothing was changed."


class DatabaseUnavailable(ServiceUnavailable):
    code = "database-unavailable"
    message = "The gateway's database is unavailable; nothing was changed."


class ShareUnavailable(ServiceUnavailable):
    code = "share-unavailable"
    message = "This share's storage is not available (is it mounted?); nothing was changed."


class LockStorageUnavailable(ServiceUnavailable):
    code = "lock-storage-unavailable"
    message = "The gateway's lock storage is unavailable; nothing was changed."


class KeyFileUnavailable(ServiceUnavailable):
    code = "key-file-unavailable"
    message = "The gateway cannot read its master key; nothing was changed."


class StorageFull(ClindavError):
    status = 507
    code = "insufficient-storage"
    message = "The share is full; nothing was stored."


# A share that cannot take writes at all (read-only, unmounted, gone away) is
# a dependency that is down; a full one is the request's own 507.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNAVAILABLE = frozenset(
    {errno.EROFS, errno.EACCES, errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.ENODEV}
)


def from_os_error(exc: OSError) -> ClindavError | None:
    """Our answer to a failing filesystem call, or None for a plain failure (500)."""
    if exc.errno in _FULL:
        return StorageFull(f"{type(exc).__name__}: {exc}")
    if exc.errno in _UNAVAILABLE:
        return ShareUnavailable(f"{type(exc).__name__}: {exc}")
    return None


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a settings or policy file, located by file and key."""

    file: str
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.problem}"


class ConfigError(ClindavError):
    """Invalid settings, policy or plugin options; raised at start-up and by check-config."""

    code = "config-error"
    message = "The configuration is invalid."

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    @classmethod
    def single(cls, file: str, key: str, problem: str) -> ConfigError:
        return cls([ConfigProblem(file, key, problem)])
