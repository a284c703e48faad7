"""Debian's Chromium, driven by Playwright, logged in to the test hub as its admin.

One way for the browser tests to open the admin's pages: the flags the project always passes
(no sandbox as root, no background networking), a page whose JavaScript errors are collected, and a
full-page screenshot in test-artifacts/ whatever the outcome.
"""

from __future__ import annotations

import contextlib
import re

from .hubfixture import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]


@contextlib.contextmanager
def admin_browser(hub, screenshot: str):
    """Yield ``(page, errors)``: a page logged in as ``admin`` (TLS is tested in test_hub, so the
    test CA is not installed here) and the list of uncaught page errors; ``screenshot`` names the
    PNG written at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(60_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{hub.url}hub/login")
            page.fill("#username_input", "admin")
            page.fill("#password_input", hub.admin_password)
            page.click("#login_submit")
            page.wait_for_url(re.compile(r"/hub/"))
            yield page, errors
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
            browser.close()
