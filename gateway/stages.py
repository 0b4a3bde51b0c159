"""The stage registry: which stages a policy may name, and how they are built.

The stages shipped with clindav (plugins/) are listed explicitly in
:data:`BUILTIN_STAGES` (no discovery); third-party stages are found through
the entry-point group ``clindav.plugins`` (each entry point names a stage
class).  A plugin that cannot be loaded, clashes with a built-in or is no
stage class stops start-up: it is never skipped.  :meth:`StageRegistry.build`
resolves a name and validates its options when the policy loads.

This is the only module of gateway/ that imports plugins/: the rest of the
gateway knows stages through the contract in gateway/pipeline.py, and the
format table the built-in stages read (plugins/formats.py) through
:func:`shown_inline`, :func:`picture_format` and :func:`check_upload_formats` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from gateway.errors import ConfigError, ConfigProblem
from gateway.pipeline import BaseStage, StageOptionsError
from gateway.settings import Settings, problems_from
from plugins.consent import ConsentCheck
from plugins.filetype import FileTypeCheck
from plugins.formats import BY_NAME, INLINE_TYPES, SNIFF_BYTES, Format, sniff
from plugins.hold import HoldStage
from plugins.scrub.stage import ScrubStage

ENTRY_POINT_GROUP = "clindav.plugins"
BUILTIN_STAGES: tuple[type[BaseStage], ...] = (FileTypeCheck, ConsentCheck, ScrubStage, HoldStage)


def builtin_stages() -> dict[str, type[BaseStage]]:
    """The stages shipped with clindav, by name."""
    return {stage.name: stage for stage in BUILTIN_STAGES}


def shown_inline(content_type: str) -> bool:
    """Whether a browser may show content of this type inline: only the image and
    video formats of the format table; anything else is served as an attachment."""
    return content_type.startswith(INLINE_TYPES)


def check_upload_formats(settings: Settings) -> None:
    """ConfigError unless every name in ``uploads.formats`` is a row of the format table."""
    known = sorted(BY_NAME)
    unknown = [name for name in settings.uploads.formats if name not in BY_NAME]
    if unknown:
        problem = f"unknown format {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        raise ConfigError([ConfigProblem("settings", "uploads.formats", problem)])


def picture_format(body: bytes) -> Format | None:
    """The format table's row for ``body`` (by its bytes) when Pillow can decode it."""
    name = sniff(body[:SNIFF_BYTES])
    row = BY_NAME.get(name) if name is not None else None
    return row if row is not None and row.pillow is not None else None


class StageRegistry:
    """Stage classes by name: the built-ins plus entry-point plugins."""

    def __init__(self, stages: Mapping[str, type[BaseStage]]) -> None:
        self._stages = dict(stages)

    @classmethod
    def default(cls) -> StageRegistry:
        stages = builtin_stages()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {ep.name} ({ep.value})"
            try:
                stage = ep.load()
            except Exception as exc:  # a broken plugin stops start-up, it is never skipped
                raise StageOptionsError([(where, f"cannot be loaded: {exc!r}")]) from None
            if ep.name in stages:
                raise StageOptionsError([(where, "clashes with a built-in stage")])
            if not (
                isinstance(stage, type) and hasattr(stage, "Options") and hasattr(stage, "on_put")
            ):
                raise StageOptionsError([(where, "is not a stage class (see gateway/pipeline.py)")])
            stages[ep.name] = stage
        return cls(stages)

    def names(self) -> list[str]:
        return sorted(self._stages)

    def build(self, name: str, options: Mapping[str, Any] | None) -> BaseStage:
        """An instance of stage ``name`` with validated options."""
        stage_class = self._stages.get(name)
        if stage_class is None:
            known = ", ".join(self.names())
            raise StageOptionsError([(name, f"unknown stage (known: {known})")])
        try:
            parsed = stage_class.Options.model_validate(dict(options or {}))
        except ValidationError as exc:
            problems = [
                (p.key, "unknown option" if p.problem == "unknown key" else p.problem)
                for p in problems_from("", exc, prefix=name)
            ]
            raise StageOptionsError(problems) from None
        return stage_class(parsed)
