"""Patient identifiers: the NHS number and MRN patterns a share files images under.

A mistyped number files a photo in the wrong patient's record (a clinical
safety incident), so every identifier is validated, never guessed:

* ``nhs-number``: 10 digits, the last a modulus-11 check digit (weights 10..2;
  a remainder giving check digit 10 is never issued).  In folder names it must
  be written as the 10 digits; on the command line and in manifests spaces
  and hyphens are accepted and removed (``943 476 5919``).
* ``regex:<pattern>``: an MRN scheme; the whole identifier must match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from gateway.errors import UnprocessableContent


class InvalidPatientId(UnprocessableContent):
    code = "invalid-patient-id"
    message = "The folder name is not a valid patient identifier for this share."


def nhs_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid NHS number (None when it is)."""
    if not re.fullmatch(r"\d{10}", value):
        return "an NHS number has exactly 10 digits"
    total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    if check == 10 or check != int(value[9]):
        return "the check digit does not match: the number is mistyped"
    return None


@dataclass(frozen=True)
class PatientScheme:
    """``nhs-number`` or ``regex:<pattern>``."""

    spec: str

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.spec[len("regex:") :]) if self.spec.startswith("regex:") else None

    def problem(self, value: str) -> str | None:
        if self.spec == "nhs-number":
            return nhs_number_problem(value)
        assert self._pattern is not None
        return None if self._pattern.fullmatch(value) else f"does not match {self._pattern.pattern}"

    def check(self, value: str) -> str:
        """``value`` if valid, else InvalidPatientId with a message that says why."""
        problem = self.problem(value)
        if problem:
            raise InvalidPatientId(
                f"{value!r}: {problem}", public=f"Not a valid patient identifier: {problem}."
            )
        return value

    def normalise(self, value: str) -> str:
        """Command-line and manifest input: spaces and hyphens removed, then checked."""
        cleaned = re.sub(r"[\s-]", "", value) if self.spec == "nhs-number" else value.strip()
        return self.check(cleaned)


def scheme_problem(spec: str) -> str | None:
    if spec == "nhs-number":
        return None
    if not spec.startswith("regex:"):
        return "use nhs-number or regex:<pattern>"
    try:
        re.compile(spec[len("regex:") :])
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None
