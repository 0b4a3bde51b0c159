"""The ``hold`` stage: every upload waits, private, until it is filed (a camera inbox).

For a share that collects photos before anyone has said whose they are (the
Nextcloud apps' camera inbox, docs/NEXTCLOUD-APPS.md): each upload is stored
held, as an image awaiting consent is (gateway/dav/held.py): only its
uploader and admins see it, and the sweeper purges it when ``window`` ends.
Filing is a MOVE into a patient folder of another share, where that share's
pipeline (its consent checks) judges it as a PUT there.

Uploads go under a folder named by the uploader's user name
(``/<uid>/...``): 403 ``inbox-not-yours`` otherwise, so one user's inbox is
never another's drop box.  It judges the path only, so it streams.

Options: ``window`` (duration, default ``30d``).
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field

from gateway.clock import Clock, Duration, SystemClock
from gateway.errors import Forbidden
from gateway.pipeline import BaseStage, PutContext
from gateway.services import Services


class InboxNotYours(Forbidden):
    code = "inbox-not-yours"
    message = "Uploads to an inbox go into your own folder in it."


class HoldOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = Field(dt.timedelta(days=30))


class HoldStage(BaseStage):
    name: ClassVar[str] = "hold"
    Options: ClassVar[type[BaseModel]] = HoldOptions
    streams: ClassVar[bool] = True
    judges_placement: ClassVar[bool] = True

    def __init__(self, options: BaseModel) -> None:
        super().__init__(options)
        self._clock: Clock = SystemClock()

    def attach(self, services: Services) -> None:
        self._clock = services.clock

    def on_put(self, ctx: PutContext) -> None:
        owner = ctx.path.strip("/").split("/", 1)[0]
        uploader = ctx.request.principal.uid if ctx.request.principal else None
        if owner != uploader or "/" not in ctx.path.strip("/"):
            raise InboxNotYours(f"{uploader} put {ctx.path} outside their inbox folder")
        ctx.held_until = self._clock.now() + cast(HoldOptions, self.options).window
        ctx.details["held"] = "inbox: until filed"
