"""QR codes drawn inline as SVG in a page (nothing loaded from elsewhere, nothing stored):
the upload link a patient scans, the login a phone scans."""

from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(text: str, title: str) -> Markup:
    """``text`` as a QR code (error correction M), an ``<svg>`` element for a template."""
    return Markup(segno.make(text, error="m").svg_inline(scale=6, title=title))
