"""The one exception tree of clindav.

Every refusal the gateway can give is a :class:`ClindavError` subclass carrying
an HTTP status, a kebab-case ``code`` and a fixed public ``message``.  The public
message is the only text a client ever sees; ``detail`` is internal (it may name
paths, patient ids or library errors) and goes only to the log, tagged with the
request id.  Error codes are part of the interface: tests, audit entries and
docs/ERRORS.md name them.
"""

from __future__ import annotations

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
