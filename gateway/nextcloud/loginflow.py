"""Login Flow v2: a device gets an app password after its user signs in to the console.

``POST /index.php/login/v2`` (:meth:`LoginFlows.start`) makes a poll token,
which only the device holds, and a login token derived from it, which goes
into the console address the device opens in a browser.  There the user,
signed in to the console as anywhere else (same authenticator, throttle and
audit), grants access, once (a flow already granted is unknown to everyone
else who opens its address): a new app password is made for them
(gateway/nextcloud/devices.py, as every door makes one) and kept, sealed
(:meth:`LoginFlows.grant`), until the device's
next poll (:meth:`LoginFlows.poll`) takes it, once.

Starting a flow needs no account and writes a row, so each client address
may start ``nextcloud.login_flow_rate`` flows in a sliding 10 minutes
(gateway/records/rates.py, counted for every process together); more are
429 ``login-flow-rate-limited``.

The database holds only hashes of both tokens, and the sealed password under
a key derived from the login token: a copy of the table reveals no password
and cannot complete a flow.  A flow not completed within
``nextcloud.login_flow_timeout`` is void, and removed by the next start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Select, delete, select

from gateway.clock import aware
from gateway.db import LoginFlow
from gateway.errors import ClindavError, NotFound
from gateway.records.rates import RateWindow
from gateway.services import Services

MAX_CLIENT = 128


class FlowUnknown(NotFound):
    code = "login-flow-unknown"
    message = "This sign-in request is unknown or has expired; start again on the device."


class FlowsRateLimited(ClindavError):
    status = 429
    code = "login-flow-rate-limited"
    message = "Too many sign-ins started from this address; wait a few minutes and try again."


@dataclass(frozen=True)
class Granted:
    login_name: str
    app_password: str


def _digest(label: bytes, secret: str) -> bytes:
    return hashlib.sha256(label + b"\0" + secret.encode()).digest()


def login_token_of(poll_token: str) -> str:
    """The browser's token: derived from the device's, never the other way round."""
    return _digest(b"clindav-login-flow-login", poll_token).hex()


def _hash(token: str) -> str:
    return _digest(b"clindav-login-flow-hash", token).hex()


def _key(login_token: str) -> bytes:
    return _digest(b"clindav-login-flow-seal", login_token)


class LoginFlows:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._sessions = services.sessions
        self._timeout = services.settings.nextcloud.login_flow_timeout
        self._rate = services.settings.nextcloud.login_flow_rate
        self._window = RateWindow(services.sessions, services.clock)

    def _now(self) -> dt.datetime:
        return self._services.clock.now()

    def start(self, client: str, address: str) -> tuple[str, str]:
        """(poll token, login token) of a new flow for the device named ``client``, started
        from ``address``; FlowsRateLimited past ``nextcloud.login_flow_rate``."""
        if not self._window.allows("login-flow-address", address, self._rate):
            raise FlowsRateLimited(f"address {address} over nextcloud.login_flow_rate")
        poll = secrets.token_urlsafe(48)
        login = login_token_of(poll)
        now = self._now()
        with self._sessions.begin() as session:
            session.execute(delete(LoginFlow).where(LoginFlow.created_at < now - self._timeout))
            session.add(
                LoginFlow(
                    poll_hash=_hash(poll),
                    login_hash=_hash(login),
                    client=(client.strip() or "Nextcloud app")[:MAX_CLIENT],
                    created_at=now,
                )
            )
        return poll, login

    def pending_client(self, login_token: str) -> str:
        """The device name of an open flow not granted yet (for the grant page), or FlowUnknown."""
        with self._sessions() as session:
            row = self._grantable(session.scalar(_by_login(login_token)))
            return row.client

    def grant(self, login_token: str, uid: str, secret: str) -> None:
        """Seal ``uid``'s new app password ``secret`` for the flow's poll.

        The caller made it (gateway/nextcloud/devices.py :func:`issue`, with its
        audit event) for :meth:`pending_client`'s device; a flow that cannot take
        it now leaves an app password the user may revoke.
        """
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(_key(login_token)).encrypt(nonce, secret.encode(), uid.encode())
        with self._sessions.begin() as session:
            row = self._grantable(session.scalar(_by_login(login_token).with_for_update()))
            row.uid, row.sealed = uid, sealed

    def poll(self, poll_token: str) -> Granted | None:
        """The granted app password, once; None while the user has not granted it.

        FlowUnknown for a token never issued, already used or expired.
        """
        with self._sessions.begin() as session:
            row = self._open(
                session.scalar(select(LoginFlow).where(LoginFlow.poll_hash == _hash(poll_token)))
            )
            if row.sealed is None or row.uid is None:
                return None
            uid, sealed = row.uid, row.sealed
            session.delete(row)  # single use
        try:
            secret = AESGCM(_key(login_token_of(poll_token))).decrypt(
                sealed[:12], sealed[12:], uid.encode()
            )
        except InvalidTag:
            raise FlowUnknown("sealed app password does not open") from None
        return Granted(uid, secret.decode())

    def _grantable(self, row: LoginFlow | None) -> LoginFlow:
        """An open flow nobody granted yet: the first user's grant is the one the device gets
        (anyone else who has the sign-in address cannot swap their account in)."""
        row = self._open(row)
        if row.sealed is not None:
            raise FlowUnknown(f"login flow already granted to {row.uid}")
        return row

    def _open(self, row: LoginFlow | None) -> LoginFlow:
        if row is None:
            raise FlowUnknown("no such login flow")
        if aware(row.created_at) < self._now() - self._timeout:
            raise FlowUnknown("login flow expired")
        return row


def _by_login(login_token: str) -> Select[LoginFlow]:
    return select(LoginFlow).where(LoginFlow.login_hash == _hash(login_token))
