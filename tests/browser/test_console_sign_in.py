"""Signing in and out of the staff console in Chromium."""

from __future__ import annotations

from tests.browser.conftest import Console


def test_sign_in_see_the_inbox_and_sign_out(console: Console) -> None:
    page = console.open("/")
    assert page.url.endswith("/app/sign-in")  # not signed in: the sign-in page
    page = console.sign_in("alice", "wrong password")
    assert "Sign-in failed" in page.inner_text("#sign-in-error")
    page = console.sign_in("alice")
    assert page.url.endswith("/app/")
    assert page.inner_text(".uid") == "alice"
    assert page.inner_text("#inbox-empty") == "Nothing waits for consent."
    page.click("#sign-out")
    assert page.url.endswith("/app/sign-in")
    console.open("/")
    assert page.url.endswith("/app/sign-in")  # the session is gone
