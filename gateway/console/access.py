"""Which console pages a user may open: by the policy's groups, as the menu shows them.

Admins are the policy's ``admin_group``; the audit pages are also for its
``auditor_group`` (docs/POLICY.md).  A page refused here is 403
``page-not-allowed``, audited with what the request attempted, also when the
address was typed by hand.
"""

from __future__ import annotations

from gateway.auth.base import Principal
from gateway.console.context import is_admin, principal, services
from gateway.errors import Forbidden


class PageNotAllowed(Forbidden):
    code = "page-not-allowed"
    message = "Your groups do not give access to this page."


def admins(who: Principal) -> bool:
    return is_admin(who)


def auditors(who: Principal) -> bool:
    """The policy's ``auditor_group`` and admins: who reads the audit trail in the console."""
    return services().policy.doc.auditor_group in who.groups or is_admin(who)


def require(allowed: bool, what: str) -> None:
    """PageNotAllowed unless ``allowed``; ``what`` names the page or action for the message
    ("the audit pages").  Call it after :func:`~gateway.console.context.attempt`."""
    if not allowed:
        who = principal()
        raise PageNotAllowed(
            f"{who.uid} ({', '.join(sorted(who.groups)) or 'no group'}) may not use {what}",
            public=f"Your groups do not give access to {what}; ask an administrator.",
        )
