"""Debian's Chromium, headless, as these machines need it (never a downloaded browser), and
waiting for a page's state in a way its Content-Security-Policy allows: Playwright's
wait_for_function compiles a string predicate with eval() inside the page, which the portal's
policy (script-src 'self') refuses; page.evaluate() runs through the DevTools protocol."""

import time

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_for_page(page, expression: str, *, timeout: float) -> None:
    """Like page.wait_for_function(expression, timeout=ms) for a JavaScript expression."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never satisfied {expression[:80]!r}")
        time.sleep(0.1)
