"""The pipeline contract: how stages plug into a request.

A *stage* is a class with a kebab-case ``name``, a pydantic ``Options`` model
and the hooks ``on_put``, ``on_copy`` and ``on_move`` (and, optionally,
``on_restore``: a file coming back from the trash, judged where it goes back
to; and ``holds_intimate``: whether an object stored at a path is intimate,
which a copy or move of it carries along).  The policy names the stages each
share runs, with options; the stage registry (gateway/stages.py) resolves
names to classes and validates the options when the policy loads, so a policy
that names an unknown stage or passes a bad option stops start-up (``clindav
check-config`` reports the same).  Once the gateway's services exist, every
stage gets them through :meth:`BaseStage.attach`.

Stage instances are built once per policy and shared by all threads: they
must keep no per-request state.  Everything about one request travels in the
context object a hook receives.  A hook refuses by raising a
:class:`~gateway.errors.ClindavError`; nothing is stored then, and the audit
observer records the refusal with the error's code.

Streamed uploads: a body is not held in memory when every stage of its
share can take it as a stream (:meth:`Pipeline.streams_body`, asked once its
first :data:`HEAD_BYTES` are in), nor when it is larger than
``limits.max_upload_bytes`` (docs/ARCHITECTURE.md).  Its stages run once
the head has arrived, on a context whose ``body`` is only that head and
whose ``streamed_size`` is set.  A stage declares with ``streams = True``
that it can judge such an upload from the head (and the path) and that it
never replaces its body; a stage that must see every byte (to check a
file's structure, to scrub it) adds a :class:`BodyFilter` to
``ctx.filters`` instead, which the rest of the body passes through on its
way to the sealed file.  It may still refuse an upload it would need
whole, with :meth:`UploadTooLargeForChecks.by` (413), and says so ahead
with :meth:`BaseStage.streams_body`.  Stages default to ``streams =
False``: a share whose pipeline has one takes no streamed upload at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from gateway.auth.base import Principal
from gateway.errors import Forbidden, PayloadTooLarge
from gateway.server.metrics import stage_timer

if TYPE_CHECKING:
    # Only named in hook signatures: the services are built after the policy
    # (and its stages), so this module never needs them at run time.
    from gateway.services import Services

# What the stages see of a streamed upload: enough for every format signature
# (and a PDF or ISO BMFF header), small enough to hold for every request.
HEAD_BYTES = 64 * 1024


class UploadTooLargeForChecks(PayloadTooLarge):
    code = "upload-too-large-for-checks"
    message = "The file is too large for this share's checks, which need the whole file."

    @classmethod
    def by(cls, stage: str, detail: str = "") -> UploadTooLargeForChecks:
        """The refusal of a streamed upload, naming the stage that needs the whole body."""
        return cls(
            f"stage {stage}: {detail or 'cannot judge a streamed upload'}",
            public=f"The file is too large for this share's {stage} check, which needs the "
            "whole file; it was not stored.",
        )


class IntimateDestinationNotRestricted(Forbidden):
    code = "intimate-destination-not-restricted"
    message = "Intimate images can only be stored where only their group may see them."


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def new_request_id() -> str:
    """A new request's id (16 hex digits): on its audit events, its log lines and, over
    HTTP, its ``X-Request-Id``.  The one place request ids are made."""
    return uuid.uuid4().hex[:16]


class BodyFilter(Protocol):
    """What a stage puts in the way of a streamed body (see the module docstring).

    ``feed`` takes the next piece of plaintext and returns the bytes to pass
    on (the same ones, or rewritten, possibly none yet); ``finish`` returns
    the last ones, or refuses with a clindav error (nothing is stored then).
    ``changed``: whether what it passed on differs from what it got (known
    after ``finish``).
    """

    changed: bool

    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


@dataclass(frozen=True)
class RequestInfo:
    """Who asked for what; fixed for the life of one request."""

    request_id: str
    principal: Principal | None
    client: str
    user_agent: str
    method: str


@dataclass
class PutContext:
    """One upload on its way through the stages; owned by one request."""

    request: RequestInfo
    share: str
    path: str
    body: bytes
    content_type: str
    # Set by stages: the sniffed format, whether this is Explorer's 0-byte
    # placeholder, and what they did (recorded on the audit event).
    file_format: str | None = None
    placeholder: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    # Consent: whose image it is, under which record, and (held) until when it
    # waits for consent.  ``source_patient_id`` is set on copies between shares,
    # whose destination path may not name the patient.
    patient_id: str | None = None
    consent_id: int | None = None
    held_until: dt.datetime | None = None
    source_patient_id: str | None = None
    # ``clindav migrate``: a legacy file being imported.  The consent stage
    # then records no consent (policy ``legacy``, docs/MIGRATION.md) and takes
    # the patient from the first segment only if ``legacy_patient_folders``.
    legacy: bool = False
    legacy_patient_folders: bool = True
    # A copy or move of an image that is intimate where it is stored
    # (:meth:`Pipeline.carries_intimate`): the destination judges it as
    # intimate wherever it goes.  A stage that judged an image as intimate sets
    # ``details["intimate"]``; an intimate image no stage judged is refused.
    intimate: bool = False
    # A streamed upload (see the module docstring): ``body`` is its first
    # HEAD_BYTES only, and this is its size as far as known when the stages
    # run: the declared length, or the bytes received so far of a chunked body
    # (which may grow).  None: ``body`` is the whole upload.
    streamed_size: int | None = None
    # A streamed upload's filters, in stage order: every byte after the head
    # (and the head itself) passes through them into the sealed file.
    filters: list[BodyFilter] = field(default_factory=list)
    # Parses of a streamed body that filters share (see shared): key -> (the
    # number of filters once its last user added its own, the parse).
    _shared: dict[str, tuple[int, object]] = field(default_factory=dict, repr=False)

    def shared(self, key: str, make: Callable[[], object]) -> object:
        """A parse of the streamed body (a JPEG's marker walk) that filters reading the same
        bytes in turn share, so it runs once: made by the first, reused by the next only
        when no other filter, which might change the bytes, was added between them.

        Call it just before adding the filter that uses it."""
        count, parse = self._shared.get(key, (-1, None))
        if count != len(self.filters):
            parse = make()
        self._shared[key] = (len(self.filters) + 1, parse)
        return parse

    def sha256(self) -> str:
        """Of the whole body; a streamed upload's is known only when it is sealed."""
        if self.streamed_size is not None:
            raise ValueError("a streamed upload's sha256 is not in its context")
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class ObjectContext:
    """A copy or move of a stored object within one share."""

    request: RequestInfo
    share: str
    path: str
    destination_share: str | None = None
    destination_path: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    streams: ClassVar[bool]

    def on_put(self, ctx: PutContext) -> None: ...
    def on_copy(self, ctx: ObjectContext) -> None: ...
    def on_move(self, ctx: ObjectContext) -> None: ...


class BaseStage:
    """Convenience base: every hook does nothing until a stage overrides it."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Whether on_put can judge a streamed upload (module docstring).  False
    # unless a stage says so: a stage written for whole bodies must never be
    # handed a head as if it were the file.
    streams: ClassVar[bool] = False
    # Whether on_put judges where an object may be (its path, the registry),
    # never its bytes: such a stage also judges each file a COPY or MOVE within
    # a share puts somewhere (Pipeline.run_placement).
    judges_placement: ClassVar[bool] = False

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def attach(self, services: Services) -> None:
        """Called once the gateway's services exist (database, clock, audit, policy),
        at start-up and for each policy a reload adopts.

        Stages that need no service ignore it; those that do keep what they
        use (shared, thread-safe objects only).
        """
        return None

    def on_put(self, ctx: PutContext) -> None:
        return None

    def streams_body(self, head: bytes) -> bool:
        """Whether on_put takes an upload that starts with ``head`` as a stream (without
        refusing it 413); by default, whether the stage streams at all."""
        return self.streams

    def on_copy(self, ctx: ObjectContext) -> None:
        return None

    def on_move(self, ctx: ObjectContext) -> None:
        return None

    def on_restore(self, ctx: PutContext) -> None:
        return None

    def holds_intimate(self, share: str, path: str) -> bool:
        """Whether an object stored at ``share:path`` is intimate (module docstring)."""
        return False


class StageOptionsError(ValueError):
    """A stage name or its options do not validate; each problem is (key, text)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {text}" for key, text in problems))
        self.problems = problems


class StageBuilder(Protocol):
    """What builds a policy's stages by name (gateway/stages.py ``StageRegistry``)."""

    def build(self, name: str, options: Mapping[str, Any] | None) -> BaseStage:
        """An instance of stage ``name`` with validated options; StageOptionsError if not."""
        ...


@dataclass(frozen=True)
class Pipeline:
    """The ordered stages one share (or rule) runs."""

    stages: tuple[BaseStage, ...] = ()

    def attach(self, services: Services) -> None:
        for stage in self.stages:
            stage.attach(services)

    def find(self, name: str) -> BaseStage | None:
        return next((s for s in self.stages if s.name == name), None)

    def stream_refusal(self) -> UploadTooLargeForChecks | None:
        """The refusal for any streamed upload, when a stage cannot judge one."""
        # getattr: a third-party stage need not subclass BaseStage (then it does not stream).
        blocker = next((s for s in self.stages if not getattr(s, "streams", False)), None)
        return None if blocker is None else UploadTooLargeForChecks.by(blocker.name)

    def streams_body(self, head: bytes) -> bool:
        """Whether every stage takes an upload starting with ``head`` as a stream."""
        return all(
            getattr(s, "streams", False) and getattr(s, "streams_body", lambda _: True)(head)
            for s in self.stages
        )

    def run_put(self, ctx: PutContext) -> None:
        refusal = self.stream_refusal() if ctx.streamed_size is not None else None
        if refusal is not None:
            raise refusal
        head = ctx.body
        for stage in self.stages:
            with stage_timer(stage.name):
                stage.on_put(ctx)
            if ctx.streamed_size is not None and ctx.body is not head:
                # What is stored is the stream, not ctx.body: a changed body
                # (a scrubbed head) would silently not be what gets stored.
                raise RuntimeError(f"stage {stage.name} replaced a streamed upload's body")
        _check_intimate_judged(ctx)

    def run_placement(self, ctx: PutContext) -> None:
        """Judge a file a COPY or MOVE within one share puts at ``ctx.path``, as a PUT there.

        Only the stages that judge where an object may be run (the consent
        stage: patient folder, consent scope, intimate consent and group); the
        stored bytes already passed this share's stages that judge bytes.
        """
        for stage in self.stages:
            if getattr(stage, "judges_placement", False):
                stage.on_put(ctx)
        _check_intimate_judged(ctx)

    def run_copy(self, ctx: ObjectContext, *, is_move: bool) -> None:
        for stage in self.stages:
            (stage.on_move if is_move else stage.on_copy)(ctx)

    def run_restore(self, ctx: PutContext) -> None:
        """A stored file going back from the trash to ``ctx.path`` (``body`` is empty;
        ``source_patient_id`` is the patient recorded with it)."""
        for stage in self.stages:
            hook = getattr(stage, "on_restore", None)  # optional for stages not based on BaseStage
            if hook is not None:
                hook(ctx)

    def carries_intimate(self, share: str, path: str) -> bool:
        """Whether a copy or move of the object at ``share:path`` (this share's pipeline)
        carries "intimate" with it: a stage here says it is intimate where it is stored."""
        return any(
            hook(share, path)
            for stage in self.stages
            # optional for stages not based on BaseStage
            if (hook := getattr(stage, "holds_intimate", None)) is not None
        )


def _check_intimate_judged(ctx: PutContext) -> None:
    """An intimate image stays intimate: a pipeline where no stage judged it so cannot take it.

    (A 0-byte placeholder is no image yet: stages skip it.)
    """
    if ctx.intimate and not ctx.placeholder and not ctx.details.get("intimate"):
        raise IntimateDestinationNotRestricted(
            f"{ctx.share}:{ctx.path}: no stage here judges intimate images"
        )
