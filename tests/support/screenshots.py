"""Screenshots for the operator's guide (docs/screenshots/), taken by the browser tests on the
real stack when VDI_SCREENSHOT_DIR is set (`make screenshots`); nothing otherwise."""

import os
from pathlib import Path


def save_screenshot(page, name: str) -> Path | None:
    directory = os.environ.get("VDI_SCREENSHOT_DIR")
    if not directory:
        return None
    path = Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path
