"""The words of a consent record: its scopes, who gave it, and how.

Scopes are cumulative (DOMAIN.md): ``record``, ``share``, ``teaching``.  Kept
apart from the registry (gateway/records/consent.py) so that the command line
offers them as choices without loading the database layer.
"""

import datetime as dt

SCOPES = ("record", "share", "teaching")
GIVEN_BY = ("patient", "parental-responsibility", "best-interests", "legal-authority")
METHODS = ("verbal", "written")


def parse_day(text: str) -> dt.date:
    """A date as every door takes it (``YYYY-MM-DD``); ValueError says what was wrong."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from None
