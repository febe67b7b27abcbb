"""Two employees launch the shared desktop at once in headless Chromium: each sees only their
own session, and what one types reaches only their own session."""

import os
import re
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from broker.models import Desktop, DesktopState
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, wait_for_page
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.sessions, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CANVAS_DIGEST = """() => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width) return null;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 0, lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    const v = data[i] + data[i + 1] + data[i + 2];
    if (v > 60) lit++;
    hash = (hash * 31 + v) | 0;
  }
  return {hash, lit: lit / (data.length / 4), width: canvas.width, height: canvas.height};
}"""


@pytest.fixture
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: scripts/install-deps.sh --test installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def logged_in_page(chromium, stack, username):
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{stack.base_url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "correct-horse-9")
    page.click("button[type=submit]")
    page.wait_for_selector("text=My desktops")
    return page


def launch(page, title):
    page.locator("article.pool", has=page.locator("h2", has_text=title)).locator("button.launch").click()
    page.wait_for_url(re.compile(r"/desktops/\d+/$"))
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def test_two_employees_use_their_own_sessions_side_by_side(live_stack, agent, farm, farm_users, chromium):
    alice, bob = farm_users("alice", "bob")
    pages = {user: logged_in_page(chromium, live_stack, user.username) for user in (alice, bob)}
    for page in pages.values():
        assert [t.strip() for t in page.locator("article.pool h2").all_inner_texts()] == ["Shared desktop", "Terminal"]

    # Both press Launch on the terminal at the same moment.
    started = time.monotonic()
    ids = {user: launch(page, "Terminal") for user, page in pages.items()}
    for page in pages.values():
        wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=60_000)
        wait_for_page(page, f"(({CANVAS_DIGEST})() || {{lit: 0}}).lit > 0.01", timeout=30_000)
    write_measurement("farm e2e: two concurrent launches to both consoles showing (s)",
                      round(time.monotonic() - started, 2))
    sessions = {user: Desktop.objects.get(pk=pk) for user, pk in ids.items()}
    assert sessions[alice].user == alice and sessions[bob].user == bob
    assert sessions[alice].vnc_port != sessions[bob].vnc_port

    # Each types into their own terminal: the file appears in their own home only.
    markers = {user: f"typed{uuid.uuid4().hex[:8]}" for user in (alice, bob)}
    for user, page in pages.items():
        page.click("#screen canvas")
        for char in f"touch {markers[user]}":
            page.keyboard.press("Space" if char == " " else char)
        page.keyboard.press("Enter")
    homes = {user: Path(settings.VDI_SESSION_HOME_ROOT) / _account(user) for user in (alice, bob)}
    for user in (alice, bob):
        wait_until(lambda u=user: (homes[u] / markers[u]).exists(), timeout=20, what=f"{user}'s typed file")
    assert not (homes[alice] / markers[bob]).exists() and not (homes[bob] / markers[alice]).exists()

    # Their screens differ (each shows their own command line).
    digests = {user: page.evaluate(CANVAS_DIGEST) for user, page in pages.items()}
    assert digests[alice]["hash"] != digests[bob]["hash"]
    shots = Path(settings.VAR_DIR)
    for user, page in pages.items():
        page.screenshot(path=str(shots / f"farm-{user.username}.png"))
    _side_by_side(chromium, [shots / "farm-alice.png", shots / "farm-bob.png"], shots / "farm-side-by-side.png")

    # Reconnect: a new tab's Connect returns the same session.
    page = pages[alice]
    page.goto(f"{live_stack.base_url}/")
    started = time.monotonic()
    launch(page, "Terminal")
    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=30_000)
    write_measurement("farm e2e: reconnect click to console connected (s)", round(time.monotonic() - started, 2))
    assert page.url.rstrip("/").endswith(str(ids[alice]))
    assert Desktop.objects.get(pk=ids[alice]).state == DesktopState.RUNNING


def _account(user) -> str:
    from broker import sessionhost

    return sessionhost.account_name(prefix=settings.VDI_SESSION_ACCOUNT_PREFIX, user_id=user.pk,
                                    username=user.username)


def _side_by_side(chromium, images, out):
    """One picture of both users' pages, for the issue note."""
    import base64

    tags = "".join(f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
                   f'style="width:640px;border:2px solid #333;margin:4px">' for p in images)
    page = chromium.new_page(viewport={"width": 1310, "height": 470})
    page.set_content(f"<body style='margin:0;display:flex'>{tags}</body>")
    page.screenshot(path=str(out))
    page.close()
