"""The virtual root ``/``: Explorer probes it (OPTIONS, PROPFIND Depth 0)
before mapping any deeper URL, so it must answer.  It lists the shares the
signed-in user may read and nothing else; it cannot be written.
"""

from __future__ import annotations

from typing import Any

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVProvider

from gateway.services import Services

PRINCIPAL = "clindav.principal"


class RootProvider(DAVProvider):
    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def is_readonly(self) -> bool:
        return True

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        if path.strip("/"):
            return None
        return RootCollection("/", environ, self)


class RootCollection(DAVCollection):
    def __init__(self, path: str, environ: dict[str, Any], provider: RootProvider) -> None:
        super().__init__(path, environ)
        self.provider: RootProvider = provider

    def get_display_name(self) -> str:
        return "clindav"

    def get_member_names(self) -> list[str]:
        principal = self.environ.get(PRINCIPAL)
        if principal is None:
            return []
        services = self.provider.services
        return services.policy.readable_shares(principal, sorted(services.shares))

    def get_member(self, name: str) -> Any:
        # Members are other providers' roots; PROPFIND Depth 1 here lists them
        # as plain collections.
        return ShareStub(util.join_uri("/", name), self.environ)

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN)

    def create_collection(self, name: str) -> None:
        raise DAVError(HTTP_FORBIDDEN)


class ShareStub(DAVCollection):
    """A share as seen from the root listing."""

    def get_member_names(self) -> list[str]:
        return []

    def get_display_name(self) -> str:
        return self.name
