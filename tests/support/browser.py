"""Debian's Chromium, headless, as these machines need it (never a downloaded browser), and
waiting for a page's state in a way its Content-Security-Policy allows: Playwright's
wait_for_function compiles a string predicate with eval() inside the page, which the portal's
policy (script-src 'self') refuses; page.evaluate() runs through the DevTools protocol."""

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Share of canvas pixels that differ from black: the VGA text console of the guest.
CANVAS_INK = """() => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 60) ink++;
  return ink / (data.length / 4);
}"""


def wait_for_page(page, expression: str, *, timeout: float) -> None:
    """Like page.wait_for_function(expression, timeout=ms) for a JavaScript expression."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never satisfied {expression[:80]!r}")
        time.sleep(0.1)


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium of its own for one test (a fixture: tests import it by name)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: scripts/install-deps.sh --test installs it")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


SHIFTED = {">": "Shift+Period", "<": "Shift+Comma", "|": "Shift+Backslash", "_": "Shift+Minus"}


def type_like_a_person(page, text: str):
    """Press Shift for shifted characters, as a person does. (Playwright's keyboard.type sends
    '>' as the Period key without Shift, and noVNC forwards physical key codes to QEMU.)"""
    for char in text:
        if char in SHIFTED:
            page.keyboard.press(SHIFTED[char])
        elif char.isupper():
            page.keyboard.press(f"Shift+Key{char}")
        else:
            page.keyboard.press("Space" if char == " " else char)
        page.wait_for_timeout(30)


def wait_for_file_text(path: str, text: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if os.path.exists(path) and text in Path(path).read_text(errors="replace"):
            return time.monotonic() - start
        time.sleep(0.1)
    tail = Path(path).read_text(errors="replace")[-500:] if os.path.exists(path) else "(no log file)"
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s; it ends with:\n{tail}")
