"""Headless Chromium (Debian's, driven by Playwright) for the dashboard's browser tests."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright

#: How long a test waits for the page to show something the API already has (the page polls every 2 s).
SHOWN_MS = 15_000


def spki_pin(certificate: Path) -> str:
    """Chromium's pin for a certificate's key: it then trusts the consortium's certificate, and only that one."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextmanager
def chromium(executable: str, trusted: Path | None = None) -> Iterator[Browser]:
    arguments = [f"--ignore-certificate-errors-spki-list={spki_pin(trusted)}"] if trusted else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=arguments)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, errors: list[str]) -> Page:
    """A page that records its script errors (a broken page must fail the test, not pass it silently)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def chart_points(page: Page) -> dict[str, list[float | None]]:
    """What the Dice chart draws: each line's label and its values, round by round."""
    return page.evaluate("Object.fromEntries(window.diceChart.data.datasets.map(d => [d.label, d.data]))")
