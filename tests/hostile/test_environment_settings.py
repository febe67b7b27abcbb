"""Every number the settings read from the environment, given any text: the start either gets a
finite number inside its bounds or stops with ImproperlyConfigured naming the variable, never a
ValueError from deep inside (or a beat schedule of "nan" seconds)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import example, given
from hypothesis import strategies as st

from tests.hostile.support import hostile

ROOT = Path(__file__).resolve().parents[2]
READERS = re.compile(r'env_(int|float)\("([A-Z0-9_]+)"')
SOURCES = [ROOT / "config/settings.py", ROOT / "config/uvicorn_http.py"]


def numeric_variables() -> list[str]:
    return sorted({name for source in SOURCES for _kind, name in READERS.findall(source.read_text())})


def load(module_name: str, env: dict):
    """Execute a settings module afresh under `env` (the running Django keeps its own)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        spec = importlib.util.find_spec(module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_every_number_in_the_settings_goes_through_the_checked_readers():
    assert len(numeric_variables()) >= 20
    for source in (ROOT / "config").glob("*.py"):
        text = source.read_text()
        assert not re.search(r"\b(int|float)\(os\.environ", text), f"{source.name} reads a number unchecked"


env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@hostile(max_examples=120)
@given(name=st.sampled_from(numeric_variables()),
       value=st.one_of(env_text, st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "30s", " 7 ", "0x10"]),
                       st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr)))
@example(name="VDI_CONSOLE_TICKET_TTL_SECONDS", value="30s")
@example(name="VDI_RECONCILE_SECONDS", value="nan")
def test_a_bad_number_stops_the_start_with_its_name(name, value):
    module = "config.uvicorn_http" if name == "VDI_HTTP_HEAD_TIMEOUT_SECONDS" else "config.settings"
    try:
        loaded = load(module, {name: value})
    except ImproperlyConfigured as error:
        assert str(error).startswith(f"{name} must be "), error
        assert repr(value.strip()) in str(error) or repr(value) in str(error)
        return
    if hasattr(loaded, name):  # the value went through: a finite number
        number = getattr(loaded, name)
        assert isinstance(number, (int, float)) and number == number and abs(number) != float("inf")


@pytest.mark.parametrize("env, message", [
    ({"VDI_CONSOLE_TICKET_TTL_SECONDS": "30s"}, "VDI_CONSOLE_TICKET_TTL_SECONDS must be a whole number, not '30s'"),
    ({"VDI_LOG_LEVEL": "chatty"}, "VDI_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not 'CHATTY'"),
    ({"VDI_CONSOLE_GATEWAY_KIND": "nginx"}, "VDI_CONSOLE_GATEWAY_KIND must be 'broker' or 'websockify'"),
    ({"VDI_CONSOLE_GATEWAY_URL": "wss://gw.example.com; script-src *"}, "VDI_CONSOLE_GATEWAY_URL must be"),
])
def test_manage_py_says_which_variable_is_wrong(env, message):
    started = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, **env})
    assert started.returncode != 0
    last_line = started.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: ") and message in last_line, \
        started.stderr[-2000:]


@pytest.mark.parametrize("value, expected", [("wss://console.example.com", "wss://console.example.com"),
                                             ("ws://127.0.0.1:8443/", "ws://127.0.0.1:8443")])
def test_a_good_gateway_url_is_taken(value, expected):
    assert load("config.settings", {"VDI_CONSOLE_GATEWAY_URL": value}).VDI_CONSOLE_GATEWAY_URL == expected


@pytest.mark.parametrize("name", ["VDI_CONSOLE_TICKETS_PER_MINUTE", "VDI_CONSOLE_IDLE_TIMEOUT_MINUTES",
                                  "VDI_CONSOLE_MAX_SESSION_MINUTES", "VDI_BALLOON_IDLE_MINUTES",
                                  "DATABASE_POOL_MAX_SIZE", "VDI_REVOKED_DESKTOP_GRACE_HOURS"])
def test_a_documented_zero_is_taken(name):
    """0 means "no limit" or "never" for these (README): the checks must not refuse it."""
    loaded = load("config.settings", {name: "0"})
    assert getattr(loaded, name) == 0
