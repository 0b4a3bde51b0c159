"""The words of a consent record: its scopes, who gave it, and how.

Scopes are cumulative (DOMAIN.md): ``record``, ``share``, ``teaching``.  Kept
apart from the registry (gateway/records/consent.py) so that the command line
offers them as choices without loading the database layer.
"""

SCOPES = ("record", "share", "teaching")
GIVEN_BY = ("patient", "parental-responsibility", "best-interests", "legal-authority")
METHODS = ("verbal", "written")
