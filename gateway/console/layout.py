"""What the layout template (``templates/base.html``) shows around every page.

The menu: each page module adds its entry with :func:`add_to_menu` when it is
registered, with who may see it (a clinician never sees the audit link; the
page itself refuses them anyway).  The banner: how many held images wait for
this user's consent decision, on every page (:func:`held_for`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g

from gateway.auth.base import Principal
from gateway.console.context import is_admin, services
from gateway.console.forms import ActionForm
from gateway.console.library import ImageEntry, held_images

_MENU = "clindav.menu"


@dataclass(frozen=True)
class MenuItem:
    endpoint: str
    label: str
    shown_to: Callable[[Principal], bool]


def add_to_menu(
    app: Flask, endpoint: str, label: str, shown_to: Callable[[Principal], bool]
) -> None:
    app.extensions.setdefault(_MENU, []).append(MenuItem(endpoint, label, shown_to))


def everyone(_who: Principal) -> bool:
    return True


def layout() -> dict[str, Any]:
    """The template context of every page (a Flask context processor)."""
    who: Principal | None = g.get("principal")
    if who is None:
        return {"principal": None, "menu": [], "is_admin": False}
    items: list[MenuItem] = current_app.extensions.get(_MENU, [])
    return {
        "principal": who,
        "is_admin": is_admin(who),
        "menu": [item for item in items if item.shown_to(who)],
        "sign_out_form": ActionForm(),
        "held_banner": lambda: len(held_for(who)),
    }


def held_for(who: Principal) -> list[ImageEntry]:
    """This user's held images, found once per request (the inbox and the banner both show them)."""
    found: list[ImageEntry] | None = g.get("held_images")
    if found is None:
        found = g.held_images = held_images(services(), who)
    return found


def age(then: dt.datetime, now: dt.datetime) -> str:
    """How long ago, as a person says it: ``5 min``, ``3 h``, ``12 days``."""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
