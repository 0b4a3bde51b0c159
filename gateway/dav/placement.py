"""COPY and MOVE within one share, judged as uploads to where they put things.

A copy or move puts stored files at new paths.  Each must be allowed there as
a PUT of the same bytes would be: the policy's ``write`` for every path it
creates (the files and folders below a folder too), no other user's private
object at a destination name, and the stages that judge where an object may
be (``judges_placement``: the consent stage's patient folder, consent scope,
intimate consent and group) for every file, with what the stored file already
is: its patient, whether it waits for consent, whether it is intimate where
it is (``Pipeline.carries_intimate``).  Its bytes are not judged again:
they passed this share's stages when they were stored.

Everything is judged before anything changes (WsgiDAV trashes an overwritten
target before it copies): one refusal refuses the whole request.  What each
destination was judged with (its patient, the consent record that covers it
there, its hold) is left in the environ (``PLACEMENTS``) for the provider to
record; the provider refuses to store a destination that was not judged.
"""

from __future__ import annotations

import mimetypes
import stat
from typing import Any

from sqlalchemy import select

from gateway.auth.base import Principal
from gateway.dav.provider import PLACEMENTS, REQUEST, ShareProvider
from gateway.db import StoredObject, starts_with
from gateway.errors import PolicyDenied
from gateway.pipeline import PutContext
from gateway.policy import Check, Decision
from gateway.services import Services
from gateway.storage.backing import split_path


def judge_relocation(
    services: Services,
    provider: ShareProvider,
    environ: dict[str, Any],
    principal: Principal,
    source: str,
    destination: str,
) -> None:
    """Judge a COPY/MOVE from ``source`` to ``destination`` within ``provider``'s share.

    Raises the refusal a PUT to the first failing destination would get;
    otherwise leaves every file's judgement in ``environ[PLACEMENTS]``.
    """
    share = provider.share
    method = environ["REQUEST_METHOD"].upper()
    src, dest = _logical(source), _logical(destination)
    rows = _rows_at_or_below(services, share.name, src)
    below = share.store.descendants(split_path(src))
    sources = dict.fromkeys([src, *below, *rows])  # files whose ciphertext is gone move too
    targets = {
        path: dest if path == src else dest.rstrip("/") + path[len(src.rstrip("/")) :]
        for path in sources
    }
    verdicts: dict[str, Decision] = {}
    for target in targets.values():  # the rules first: a 409 tells nothing to strangers
        verdicts[target] = services.policy.decide(
            principal, Check(share.name, target, method, "write")
        )
        if not verdicts[target].allowed:
            raise PolicyDenied(f"rule {verdicts[target].rule} denies {share.name}:{target}")
    placements: dict[str, PutContext] = {}
    for path, target in targets.items():
        provider.check_name_free(target, environ)
        size, row = _file_size(provider, path), rows.get(path)
        if size is None and row is None:
            continue  # a folder: its rule was checked above
        ctx = PutContext(
            request=environ[REQUEST],
            share=share.name,
            path=target,
            body=b"",
            content_type=mimetypes.guess_type(target)[0] or "application/octet-stream",
            streamed_size=size or 0,  # the body is not here: only where it goes is judged
            intimate=services.policy.pipeline(share.name).carries_intimate(share.name, path),
        )
        if row is not None:
            ctx.content_type, ctx.placeholder = row.content_type, row.placeholder
            ctx.patient_id, ctx.consent_id = row.patient_id, row.consent_id
            ctx.held_until, ctx.source_patient_id = row.held_until, row.patient_id
        verdicts[target].pipeline.run_placement(ctx)
        placements[target] = ctx
    environ[PLACEMENTS] = placements


def _logical(path: str) -> str:
    return "/" + "/".join(split_path(path))


def _rows_at_or_below(services: Services, share: str, path: str) -> dict[str, StoredObject]:
    with services.sessions() as session:
        rows = session.scalars(
            select(StoredObject).where(
                StoredObject.share == share,
                (StoredObject.logical_path == path)
                | starts_with(StoredObject.logical_path, path.rstrip("/") + "/"),
            )
        ).all()
    return {row.logical_path: row for row in rows}


def _file_size(provider: ShareProvider, path: str) -> int | None:
    """The plaintext size of the stored file at ``path``; None for a folder or nothing."""
    share = provider.share
    st = share.store.lstat(share.store.locate(split_path(path)))
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    return share.content.plaintext_size(st.st_size)
