"""Figures the tests observe on the way (not asserted): printed at the end of the run."""

import json
import os
from pathlib import Path

from django.conf import settings


def _path() -> Path:
    return Path(settings.VAR_DIR) / f"measurements-{os.getpid()}.json"


def write_measurement(name: str, value) -> None:
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=1))


def read_measurements() -> dict:
    path = _path()
    if not path.exists():
        return {}
    figures = json.loads(path.read_text())
    path.unlink()
    return figures
