"""Devices: app passwords issued and revoked with their ``APP-PASSWORD`` events, and what a
phone scans to sign in.  ``clindav user app-password`` and the console's Devices page
(gateway/console/devices.py) both call :func:`issue` and :func:`revoke`, so a device is
audited alike whichever door made or ended it (docs/NEXTCLOUD-APPS.md).

The QR login (:func:`login_link`) is the Nextcloud apps' ``nc://login/`` text: ``key:value``
fields joined by ``&``, not URL-encoded.  The apps split it at every ``&``, and some app
versions URL-decode each value while others do not; a user name with ``&``, ``:``, ``%`` or
``+`` would reach some phones changed, so :func:`require_qr_safe` refuses the QR for it (the
phone signs in through Login Flow v2 instead).  Local user names never contain them; directory
(LDAP) ones may.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest, Conflict, NotFound
from gateway.nextcloud.records import chained_event
from gateway.pipeline import RequestInfo
from gateway.services import Services

QR_UNSAFE = "&:%+"


class NoEnabledAccount(NotFound):
    code = "no-enabled-account"
    message = "There is no enabled account of that name."


class NotQrSafe(BadRequest):
    code = "user-name-not-qr-safe"
    message = "This user name cannot be carried by the apps' QR login."


class NextcloudDoorOff(Conflict):
    code = "nextcloud-door-off"
    message = "The Nextcloud apps cannot reach this gateway (nextcloud.enabled is off)."


def require_door_open(services: Services) -> None:
    """NextcloudDoorOff when the apps' door is closed: a QR login would lead nowhere."""
    if not services.settings.nextcloud.enabled:
        raise NextcloudDoorOff("connect a phone: nextcloud.enabled is off")


def issue(services: Services, request: RequestInfo, uid: str, device: str, **details: Any) -> str:
    """A new app password of ``uid``'s account for ``device``, committed with its event."""
    if services.authenticator.account(uid) is None:
        raise NoEnabledAccount(f"no enabled account {uid}", public=f"no enabled account {uid!r}")
    event = chained_event(
        services, request, "APP-PASSWORD", change="issued", uid=uid, device=device, **details
    )
    return services.app_passwords.create(uid, device, event)


def revoke(services: Services, request: RequestInfo, uid: str, ident: int, **details: Any) -> None:
    """Revoke ``uid``'s app password ``ident``, committed with its event (NotFound if not
    ``uid``'s); the device's next request is refused, in every gateway process."""
    event = chained_event(
        services, request, "APP-PASSWORD", change="revoked", uid=uid, id=ident, **details
    )
    services.app_passwords.revoke(uid, ident, event)


def server_address(environ: dict[str, Any]) -> str:
    """The address the device reached the gateway at (scheme and host, no path): what Login
    Flow v2 returns as ``server`` and the QR login carries.  Behind a proxy in
    ``server.trusted_proxies`` (the only one whose X-Forwarded-* headers every door keeps),
    the scheme and host it forwards: a TLS proxy before a plain clindav."""
    host = (
        _last(environ.get("HTTP_X_FORWARDED_HOST"))
        or environ.get("HTTP_HOST")
        or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT')}"
    )
    scheme = _last(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
    if scheme not in ("http", "https"):
        scheme = environ.get("wsgi.url_scheme", "http")
    return f"{scheme}://{host}"


def _last(header: str | None) -> str:
    """A forwarding header's last entry: our proxy's; earlier ones are the client's say."""
    return (header or "").split(",")[-1].strip()


def require_qr_safe(uid: str) -> None:
    """NotQrSafe when ``uid`` would reach some phones changed (the module's docstring)."""
    unsafe = sorted(set(uid) & set(QR_UNSAFE))
    if unsafe:
        raise NotQrSafe(
            f"user name {uid!r} holds {''.join(unsafe)!r}",
            public=(
                f"The user name {uid} contains {' '.join(unsafe)}, which the Nextcloud apps' "
                "QR login cannot carry. Connect this phone from the app instead: Log in, type "
                "the server address and sign in on the page it opens."
            ),
        )


def login_link(uid: str, password: str, server: str) -> str:
    """The QR login text; ``uid`` has passed :func:`require_qr_safe`."""
    return f"nc://login/user:{uid}&password:{password}&server:{server}"
