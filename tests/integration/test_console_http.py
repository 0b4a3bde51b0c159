"""The staff console over plain HTTP (requests): mount, headers, cookies, sessions, CSRF.

The browser tests (tests/browser/) drive the pages; these check what a
browser does not show: every header and cookie flag, what the database
keeps of a session, refusals of forged and stale requests, and the audit
events of sign-in.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
import requests

from tests.conftest import PASSWORD, Gateway, Instance, InstanceClock, start_in_process

NEW_PASSWORD = "a-new-password-for-alice"
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'"
)


def browser_session(gateway: Gateway) -> requests.Session:
    """A client with cookies and no Basic credentials, as a browser is."""
    return gateway.session(user=None)


def form_token(page: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in(gateway: Gateway, user: str = "alice", password: str = PASSWORD) -> requests.Session:
    s = browser_session(gateway)
    page = s.get(f"{gateway.url}/app/sign-in")
    r = s.post(
        f"{gateway.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": user, "password": password},
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return s


def database(inst: Instance) -> sqlite3.Connection:
    return sqlite3.connect(inst.folder / "clindav.db")


def events(inst: Instance, action: str) -> list[tuple[str, int, str, str]]:
    with database(inst) as db:
        return db.execute(
            "SELECT actor, status, code, reason FROM audit_event WHERE action = ? ORDER BY seq",
            (action,),
        ).fetchall()


def test_a_browser_at_the_root_is_sent_to_the_console(gateway: Gateway) -> None:
    s = browser_session(gateway)
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    r = s.get(f"{gateway.url}/", headers=html, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/app/"
    # WebDAV clients still get the virtual root.
    dav = gateway.session()
    assert dav.request("PROPFIND", f"{gateway.url}/", headers={"Depth": "1"}).status_code == 207
    r = dav.get(f"{gateway.url}/", headers={**html, "Translate": "f"}, allow_redirects=False)
    assert r.status_code != 303
    assert dav.get(f"{gateway.url}/", allow_redirects=False).status_code != 303


def test_pages_carry_the_console_security_headers(gateway: Gateway) -> None:
    s = browser_session(gateway)
    r = s.get(f"{gateway.url}/app/", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].endswith("/app/sign-in")
    for page in (r, s.get(f"{gateway.url}/app/sign-in")):
        csp = page.headers["Content-Security-Policy"]
        assert csp.startswith(CONSOLE_CSP), csp
        assert "unsafe-inline" not in csp and "sandbox" not in csp
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Cache-Control"] == "no-store"
        assert re.fullmatch(r"[0-9a-f]{16}", page.headers["X-Request-Id"])
        assert "Strict-Transport-Security" not in page.headers  # plain HTTP on loopback
    # The page has no inline script or style: the CSP would block them.
    body = s.get(f"{gateway.url}/app/sign-in").text
    assert "<script" not in body and "style=" not in body and "<style" not in body
    css = s.get(f"{gateway.url}/app/static/console.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    # WebDAV answers keep their own, stricter policy.
    dav = gateway.session().request("PROPFIND", f"{gateway.url}/", headers={"Depth": "0"})
    assert dav.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert "Referrer-Policy" not in dav.headers


def test_sign_in_sets_a_strict_cookie_and_the_database_keeps_only_its_hash(
    gateway: Gateway,
) -> None:
    s = browser_session(gateway)
    page = s.get(f"{gateway.url}/app/sign-in")
    form_cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in form_cookie and "SameSite=Strict" in form_cookie
    assert "Path=/app" in form_cookie and "Secure" not in form_cookie  # plain HTTP here
    r = s.post(
        f"{gateway.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("/app/")
    cookie = next(
        c for c in r.raw.headers.getlist("Set-Cookie") if c.startswith("clindav-session=")
    )
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/app" in cookie
    assert "Expires" not in cookie and "Max-Age" not in cookie  # ends with the browser
    token = s.cookies["clindav-session"]
    with database(gateway.instance) as db:
        rows = db.execute("SELECT token_hash, uid, groups, data FROM console_session").fetchall()
    assert [row[:2] for row in rows] == [(hashlib.sha256(token.encode()).hexdigest(), "alice")]
    assert token not in repr(rows)
    inbox = s.get(f"{gateway.url}/app/")
    assert inbox.status_code == 200 and "alice" in inbox.text
    assert events(gateway.instance, "LOGIN") == [("alice", 200, "signed-in", "")]
    assert [e[:3] for e in events(gateway.instance, "VIEW")] == [("alice", 200, "ok")]


def test_a_wrong_password_is_refused_audited_and_signs_nobody_in(gateway: Gateway) -> None:
    s = browser_session(gateway)
    page = s.get(f"{gateway.url}/app/sign-in")
    r = s.post(
        f"{gateway.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": "wrong"},
        allow_redirects=False,
    )
    assert r.status_code == 401
    assert "Sign-in failed: the user name or the password is wrong." in r.text
    assert "clindav-session" not in s.cookies
    assert events(gateway.instance, "LOGIN") == [
        ("-", 401, "authentication-required", "login failed for 'alice'")
    ]
    with database(gateway.instance) as db:
        assert db.execute("SELECT count(*) FROM console_session").fetchone() == (0,)


def test_a_post_without_the_form_token_is_refused_and_audited(gateway: Gateway) -> None:
    s = sign_in(gateway)
    r = s.post(f"{gateway.url}/app/sign-out", data={}, allow_redirects=False)
    assert r.status_code == 400 and "form-token-invalid" in r.text
    r = s.post(f"{gateway.url}/app/sign-out", data={"csrf_token": "forged"}, allow_redirects=False)
    assert r.status_code == 400
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 200  # still in
    refused = [e for e in events(gateway.instance, "POST") if e[2] == "form-token-invalid"]
    assert len(refused) == 2 and refused[0][:2] == ("alice", 400)
    # With the token, sign-out ends the session in the database too.
    page = s.get(f"{gateway.url}/app/")
    r = s.post(
        f"{gateway.url}/app/sign-out",
        data={"csrf_token": form_token(page.text)},
        allow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("/app/sign-in")
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 303
    with database(gateway.instance) as db:
        assert db.execute("SELECT count(*) FROM console_session").fetchone() == (0,)
    assert events(gateway.instance, "LOGOUT") == [("alice", 200, "signed-out", "")]


def test_an_idle_session_expires(instance: Instance, clock: InstanceClock) -> None:
    gw = start_in_process(instance)
    try:
        s = sign_in(gw)
        clock.advance("14m")
        assert s.get(f"{gw.url}/app/", allow_redirects=False).status_code == 200
        clock.advance("28m")  # 14 minutes after that request: still within 15
        assert s.get(f"{gw.url}/app/", allow_redirects=False).status_code == 200
        clock.advance("44m")
        r = s.get(f"{gw.url}/app/", allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].endswith("/app/sign-in/expired")
        assert "clindav-session" not in s.cookies  # the cookie is deleted too
        page = s.get(f"{gw.url}/app/sign-in/expired")
        assert "signed out after a period without activity" in page.text
        with database(instance) as db:
            assert db.execute("SELECT count(*) FROM console_session").fetchone() == (0,)
    finally:
        gw.stop()


def test_a_busy_session_still_ends_after_max_session(
    instance: Instance, clock: InstanceClock
) -> None:
    data = instance.settings()
    data["console"] = {"max_session": "30m"}
    instance.write_settings(data)
    gw = start_in_process(instance)
    try:
        s = sign_in(gw)
        for offset in ("10m", "20m", "29m"):
            clock.advance(offset)
            assert s.get(f"{gw.url}/app/", allow_redirects=False).status_code == 200
        clock.advance("31m")
        r = s.get(f"{gw.url}/app/", allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].endswith("/app/sign-in/expired")
    finally:
        gw.stop()


def test_a_disabled_account_is_signed_out_at_its_next_request(gateway: Gateway) -> None:
    from tests.conftest import run_cli

    s = sign_in(gateway)
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 200
    run_cli("user", "disable", "alice", config=gateway.instance.config)
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 303


def test_a_new_password_signs_the_account_out_everywhere(gateway: Gateway) -> None:
    """A password reset after a stolen session ends that session too, not only future logins."""
    from tests.conftest import run_cli

    s = sign_in(gateway)
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 200
    run_cli(
        "user",
        "passwd",
        "alice",
        "--password-stdin",
        config=gateway.instance.config,
        stdin=NEW_PASSWORD + "\n",
    )
    r = s.get(f"{gateway.url}/app/", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].endswith("/app/sign-in")
    with database(gateway.instance) as db:
        assert db.execute("SELECT count(*) FROM console_session").fetchone() == (0,)
    assert sign_in(gateway, password=NEW_PASSWORD).get(f"{gateway.url}/app/").status_code == 200


def test_a_devices_app_password_does_not_sign_in_to_the_console(gateway: Gateway) -> None:
    """A lost phone's app password reaches files until revoked; it must not open the console,
    where it could mint devices of its own that outlive its revocation (or, an admin's, reset
    passwords)."""
    from tests.conftest import run_cli

    made = run_cli("user", "app-password", "alice", config=gateway.instance.config)
    secret = made.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert _lists_documents(gateway, secret)
    s = browser_session(gateway)
    page = s.get(f"{gateway.url}/app/sign-in")
    r = s.post(
        f"{gateway.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": secret},
        allow_redirects=False,
    )
    assert r.status_code == 401, r.text
    assert "clindav-session" not in s.cookies
    assert events(gateway.instance, "LOGIN")[-1] == (
        "-",
        401,
        "authentication-required",
        "login failed for 'alice'",
    )
    # The account's own password still signs in; the device still reaches files afterwards.
    assert sign_in(gateway).get(f"{gateway.url}/app/").status_code == 200
    assert _lists_documents(gateway, secret)


def _lists_documents(gateway: Gateway, password: str) -> bool:
    device = gateway.session("alice", password)
    return device.request("PROPFIND", f"{gateway.url}/documents/", headers={"Depth": "0"}).ok


def test_over_tls_cookies_are_secure_and_hsts_is_sent(instance: Instance) -> None:
    gw = start_in_process(instance, tls=True)
    try:
        _signs_in_with_secure_cookies_and_hsts(gw, browser_session(gw))
    finally:
        gw.stop()


def test_behind_a_trusted_tls_proxy_cookies_are_secure_and_hsts_is_sent(
    instance: Instance,
) -> None:
    """nginx with TLS before ``clindav serve --no-tls``: the browser is on HTTPS, so its
    session cookie must never go out over plain HTTP (an http:// link, a redirecting port 80)."""
    settings = instance.settings()
    settings["server"]["trusted_proxies"] = ["127.0.0.1"]
    instance.write_settings(settings)
    gw = start_in_process(instance)
    try:
        s = browser_session(gw)
        s.headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"})
        _signs_in_with_secure_cookies_and_hsts(gw, s)
        assert events(instance, "LOGIN")[-1][:3] == ("alice", 200, "signed-in")
    finally:
        gw.stop()


def _signs_in_with_secure_cookies_and_hsts(gw: Gateway, s: requests.Session) -> None:
    page = s.get(f"{gw.url}/app/sign-in")
    assert "Secure" in page.headers["Set-Cookie"]
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    for kept in s.cookies:  # behind the proxy this client speaks plain HTTP, as nginx does
        kept.secure = False
    r = s.post(
        f"{gw.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert r.status_code == 303
    cookie = next(
        c for c in r.raw.headers.getlist("Set-Cookie") if c.startswith("clindav-session=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_audit_trail_refusing_writes_makes_sign_in_a_503(gateway: Gateway) -> None:
    path = Path(gateway.instance.folder / "clindav.db")
    s = browser_session(gateway)
    page = s.get(f"{gateway.url}/app/sign-in")
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        )
    r = s.post(
        f"{gateway.url}/app/sign-in",
        data={"csrf_token": form_token(page.text), "user": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert r.status_code == 503
    assert "unavailable" in r.text
    assert "clindav-session" not in s.cookies  # no audit, no session
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM console_session").fetchone() == (0,)


def test_unknown_and_climbing_console_paths(gateway: Gateway) -> None:
    s = sign_in(gateway)
    r = s.get(f"{gateway.url}/app/no-such-page", allow_redirects=False)
    assert r.status_code == 404 and r.headers["Cache-Control"] == "no-store"
    assert "not-found" in r.text
    # Dot segments never reach the console: the path guard refuses them first.
    r = s.get(f"{gateway.url}/app/static/%2e%2e/%2e%2e/clindav.db", allow_redirects=False)
    assert r.status_code == 400 and r.headers["X-Clindav-Error"] == "invalid-path"


@pytest.mark.postgres
@pytest.mark.parametrize("instance", ["postgres"], indirect=True)
def test_the_database_down_is_a_503_page(gateway: Gateway) -> None:
    import sqlalchemy

    from tests.conftest import PG_ADMIN_URL

    s = sign_in(gateway)
    stranger = browser_session(gateway)
    token = form_token(stranger.get(f"{gateway.url}/app/sign-in").text)
    name = gateway.instance.settings()["database_url"].rsplit("/", 1)[1]
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
    try:
        r = s.get(f"{gateway.url}/app/", allow_redirects=False, timeout=30)
        assert r.status_code == 503 and r.headers["X-Clindav-Error"] == "database-unavailable"
        assert "request id" in r.text and "Traceback" not in r.text
        r = stranger.post(
            f"{gateway.url}/app/sign-in",
            data={"csrf_token": token, "user": "alice", "password": PASSWORD},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 503 and "clindav-session" not in stranger.cookies
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()
    assert s.get(f"{gateway.url}/app/", allow_redirects=False).status_code == 200


def test_a_consent_post_without_this_sessions_token_changes_nothing(gateway: Gateway) -> None:
    alice, mallory = sign_in(gateway), sign_in(gateway, "root-admin")
    form = {
        "patient": "9434765919",
        "scope": "record",
        "given_by": "patient",
        "method": "verbal",
        "recorded_by": "alice",
    }
    url = f"{gateway.url}/app/patients/9434765919/consent"
    others = form_token(mallory.get(url).text)  # valid, but another session's
    for data in (form, {**form, "csrf_token": others}):
        r = alice.post(url, data=data, allow_redirects=False)
        assert r.status_code == 400 and r.headers["X-Clindav-Error"] == "form-token-invalid"
    with database(gateway.instance) as db:
        assert db.execute("SELECT count(*) FROM consent_record").fetchone() == (0,)
    r = alice.post(url, data={**form, "csrf_token": form_token(alice.get(url).text)})
    assert r.status_code == 200 and "Consent #1 recorded" in r.text
