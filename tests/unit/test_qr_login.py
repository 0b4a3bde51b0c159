"""The Nextcloud apps' QR login text, and the user names it cannot carry.

The apps split the text at every ``&``; some app versions URL-decode each
value and others do not, so a name with ``&``, ``:``, ``%`` or ``+`` would sign
some phones in as someone else's spelling (gateway/nextcloud/devices.py).
"""

from __future__ import annotations

import pytest

from gateway.nextcloud.devices import NotQrSafe, login_link, require_qr_safe


def test_the_login_text_is_key_value_fields_not_url_encoded() -> None:
    text = login_link(
        "dr.o-neil@clinic", "abcde-fghjk-mnpqr-stuvw-xyz23", "https://dav.example:8443"
    )
    assert text == (
        "nc://login/user:dr.o-neil@clinic&password:abcde-fghjk-mnpqr-stuvw-xyz23"
        "&server:https://dav.example:8443"
    )
    fields = dict(f.split(":", 1) for f in text.removeprefix("nc://login/").split("&"))
    assert fields["server"] == "https://dav.example:8443"


@pytest.mark.parametrize("uid", ["o&neil", "ward:3", "100%", "a+b"])
def test_names_the_apps_would_misread_are_refused(uid: str) -> None:
    with pytest.raises(NotQrSafe) as refused:
        require_qr_safe(uid)
    assert "QR login cannot carry" in refused.value.public_message


@pytest.mark.parametrize("uid", ["alice", "dr.o-neil@clinic", "j_smith", "Zoë"])
def test_local_and_ordinary_directory_names_pass(uid: str) -> None:
    require_qr_safe(uid)
