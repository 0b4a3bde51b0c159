"""Browser fixtures: Debian's Chromium driven by playwright against the real gateway.

``browser`` is one Chromium for the module's tests (never downloaded:
``/usr/bin/chromium``); ``console`` is a fresh browser context (its own
cookies) on a gateway started for the test by ``gateway`` (tests/conftest.py),
with helpers to sign in and open console pages.  Every test here is marked
``browser``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import PASSWORD, Gateway

CHROMIUM = "/usr/bin/chromium"
# Set to a folder (e.g. docs/console) to save the pages' screenshots there; unset, none is.
SCREENSHOTS = "CLINDAV_SCREENSHOTS"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@dataclass
class Console:
    """One browser (its own cookies) on the console of ``gateway``."""

    gateway: Gateway
    page: Page

    def url(self, path: str = "/") -> str:
        return f"{self.gateway.url}/app{path}"

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.url(path))
        return self.page

    def screenshot(self, name: str, size: dict[str, int] = LAPTOP) -> Path | None:
        """Save the page as ``<name>.png`` in $CLINDAV_SCREENSHOTS at ``size`` (the docs'
        pictures: made by the tests that check the pages, so they show what is built)."""
        folder = os.environ.get(SCREENSHOTS)
        if not folder:
            return None
        path = Path(folder) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        before = self.page.viewport_size
        self.page.set_viewport_size(size)
        self.page.screenshot(path=str(path))
        if before is not None:
            self.page.set_viewport_size(before)
        return path

    def sign_in(self, user: str = "alice", password: str = PASSWORD) -> Page:
        self.open("/sign-in")
        self.page.fill("input[name=user]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("#sign-in")
        return self.page


@pytest.fixture
def console(browser: Browser, gateway: Gateway) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Console(gateway, context.new_page())
    context.close()


@pytest.fixture
def open_console(browser: Browser) -> Iterator[Callable[[Gateway], Console]]:
    """More browsers (a colleague, an admin), each with its own cookies."""
    contexts = []

    def opened(gateway: Gateway) -> Console:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        return Console(gateway, context.new_page())

    yield opened
    for context in contexts:
        context.close()
