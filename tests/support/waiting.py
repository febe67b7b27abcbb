import os
import time
from pathlib import Path


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_state(desktop, state: str, *, timeout: float = 60):
    from broker.models import Desktop

    def reached():
        current = Desktop.objects.get(pk=desktop.pk)
        if current.state == "failed" and state != "failed":
            raise AssertionError(f"{current.name} failed: {current.last_error}")
        return current if current.state == state else None

    try:
        return wait_until(reached, timeout=timeout, what=f"{desktop.name} to be {state}")
    except AssertionError as timed_out:
        current = Desktop.objects.get(pk=desktop.pk)
        events = list(current.events.order_by("-created_at", "-id").values_list("to_state", "message")[:6])
        raise AssertionError(f"{timed_out}; it is {current.state} on {current.host}; latest events: {events}") from None


def file_contains(path: str, needle: bytes) -> bool:
    return os.path.exists(path) and needle in Path(path).read_bytes()


def wait_for_guest_shell(desktop, *, timeout: float = 120):
    wait_until(lambda: file_contains(desktop.serial_log_path, b"VDI-GUEST-READY"), timeout=timeout,
               what=f"{desktop.name} to boot to its shell")
