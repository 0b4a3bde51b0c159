"""The policy gate: what an authenticated WebDAV request may do, decided before
any byte of its body is read.

In this order: the header and body checks (gateway/dav/limits.py); the path
(gateway/storage/backing.py); the share's marker; the Destination of a COPY
or MOVE, read once (gateway/dav/destination.py); the policy, for the source,
the destination and, for DELETE, MOVE and COPY of a folder, every item below
it; then the COPY size, holds, the placement of a relocation within a share,
the declared length and a PROPPATCH's dead properties.  Each refusal raises
its :class:`~gateway.errors.ClindavError`; the middleware answers and audits it.
"""

from __future__ import annotations

from typing import Any

from gateway.auth.base import Principal
from gateway.dav.destination import Destination, resolve_destination
from gateway.dav.junk import JunkDestination, is_junk
from gateway.dav.limits import check_copy_size, check_dead_properties, check_request
from gateway.dav.outcome import Outcome
from gateway.dav.placement import judge_relocation
from gateway.dav.provider import DECISION, ShareProvider
from gateway.errors import BadRequest, PayloadTooLarge, PolicyDenied, ShareUnavailable
from gateway.policy import ACTIONS, Check, Decision, request_checks
from gateway.records.patientpaths import patient_of
from gateway.services import Services
from gateway.storage.backing import split_path


class PolicyGate:
    def __init__(self, services: Services) -> None:
        self.services = services

    def check(self, environ: dict[str, Any], principal: Principal, outcome: Outcome) -> None:
        """Let the request through (its decision in ``environ[DECISION]``) or raise."""
        method = environ["REQUEST_METHOD"].upper()
        provider = environ.get("wsgidav.provider")
        outcome.action = method
        is_admin = self.services.policy.doc.admin_group in principal.groups
        check_request(environ, method, is_admin=is_admin)
        if not isinstance(provider, ShareProvider):
            return  # the read-only virtual root lists only readable shares
        share = provider.share.name
        path = environ.get("PATH_INFO", "/")
        outcome.share, outcome.path = share, path
        if is_junk(path):
            self._check_junk(environ, principal, method, share, path)
            return
        split_path(path)
        # Before the request runs: a MOVE or DELETE takes the registry row away.
        outcome.patient = patient_of(self.services, share, path)
        if not provider.share.store.root.is_dir():
            raise ShareUnavailable(f"backing folder of {share} is missing")
        # Only COPY and MOVE have a destination (gateway/dav/limits.py drops the header elsewhere).
        outcome.destination = self._destination(environ) if method in ("COPY", "MOVE") else None
        self._require_mounted(share, outcome.destination)
        checks = request_checks(method, share, path, outcome.destination)
        if method in ("DELETE", "MOVE", "COPY"):
            # A folder operation reaches everything below it: each item must pass too.
            checks += [
                Check(share, sub, method, checks[0].action)
                for sub in provider.share.store.descendants(split_path(path))
            ]
        environ[DECISION] = self._decide(principal, checks)
        self._check_relocation(environ, principal, provider, outcome)
        self._check_length(environ)
        if method == "PROPPATCH" and provider.prop_manager is not None:
            resource = provider.get_resource_inst(path, environ)
            if resource is not None:  # else WsgiDAV answers 404
                check_dead_properties(environ, resource, provider.prop_manager)

    def _check_relocation(
        self,
        environ: dict[str, Any],
        principal: Principal,
        provider: ShareProvider,
        outcome: Outcome,
    ) -> None:
        """A COPY's size, a MOVE's holds, and where either puts things within the share."""
        method, share, path = outcome.action, provider.share.name, outcome.path or "/"
        if method == "COPY":  # after the policy (no size hints to strangers), before any copy
            limits = self.services.settings.limits
            check_copy_size(provider.share, split_path(path), environ.get("HTTP_DEPTH"), limits)
        if method == "MOVE" and outcome.destination is not None:
            # A hold keeps what it holds in its place (deletes are checked by the
            # trash; what an overwrite replaces goes to the trash, kept).
            dest_share, dest_path = outcome.destination
            self.services.trash.check_move(
                share,
                "/" + "/".join(split_path(path)),
                dest_share,
                "/" + "/".join(split_path(dest_path)),
            )
        if outcome.destination is not None and outcome.destination[0] == share:
            # Into another share, gateway/dav/crossshare.py runs that share's pipeline.
            judge_relocation(
                self.services, provider, environ, principal, path, outcome.destination[1]
            )

    def _decide(self, principal: Principal, checks: list[Check]) -> Decision | None:
        """Every check must pass; the first one's decision carries the pipeline."""
        decision: Decision | None = None
        for check in checks:
            verdict = self.services.policy.decide(principal, check)
            if not verdict.allowed:
                raise PolicyDenied(f"rule {verdict.rule} denies {check}")
            decision = decision or verdict
        return decision

    def _check_junk(
        self, environ: dict[str, Any], principal: Principal, method: str, share: str, path: str
    ) -> None:
        """Client junk is answered and never stored (gateway/dav/junk.py), so its own name
        need not be one clindav could store (Finder probes ``._.``): its folder must
        be, and the policy decides as for any request at that path."""
        split_path(path.rstrip("/").rsplit("/", 1)[0])
        check = Check(share, path, method, ACTIONS.get(method, "write"))
        environ[DECISION] = self._decide(principal, [check])
        self._check_length(environ)

    def _destination(self, environ: dict[str, Any]) -> Destination | None:
        """The one reading of a COPY/MOVE Destination (gateway/dav/destination.py).

        Its share and NFC share-relative path are what the gate judges, and
        ``HTTP_DESTINATION`` now holds exactly that path for WsgiDAV.  Client
        junk is never a destination: it would be stored under a name every
        later request answers as junk, hidden for ever.
        """
        destination = resolve_destination(environ, self.services.shares)
        if destination is not None and is_junk(destination.path):
            raise JunkDestination(f"{destination.share}:{destination.path}")
        return destination

    def _require_mounted(self, share: str, destination: tuple[str, str] | None) -> None:
        """503 share-unavailable while a share's marker is gone (gateway/storage/marker.py):
        an unmounted share's empty mount point is never listed or written."""
        for name in (share, destination[0] if destination else None):
            watch = self.services.markers.get(name) if name else None
            if watch is not None:
                watch.check()

    def _check_length(self, environ: dict[str, Any]) -> None:
        """A declared length over what the request can take: 413 before any byte is read.

        Bodies up to ``limits.max_upload_bytes`` are held in memory.  A larger
        PUT is streamed (gateway/dav/provider.py), up to ``limits.max_stream_bytes``,
        if every stage of its pipeline can judge a streamed upload; otherwise
        the refusal names the stage that needs the whole body.
        """
        limits = self.services.settings.limits
        for key in ("CONTENT_LENGTH", "HTTP_X_EXPECTED_ENTITY_LENGTH"):
            raw = environ.get(key) or ""
            if raw and (not raw.isdigit() or len(raw) > 18):
                raise BadRequest(f"bad {key}: {raw[:32]!r}")
            if not raw or int(raw) <= limits.max_upload_bytes:
                continue
            if environ["REQUEST_METHOD"].upper() != "PUT":
                raise PayloadTooLarge(f"{key} {raw}")
            refusal = environ[DECISION].pipeline.stream_refusal()
            if refusal is not None:
                raise refusal
            if int(raw) > limits.max_stream_bytes:
                raise PayloadTooLarge(f"{key} {raw} over limits.max_stream_bytes")
