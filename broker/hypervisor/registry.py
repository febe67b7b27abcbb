"""Which driver serves which host. Connections are cached per process and libvirt URI."""

from __future__ import annotations

import os
import threading

from .base import HypervisorDriver

_drivers: dict[tuple[int, str], HypervisorDriver] = {}
_lock = threading.Lock()


def driver_for_uri(uri: str) -> HypervisorDriver:
    # Keyed by pid: a libvirt connection must never cross a fork (Celery prefork children).
    key = (os.getpid(), uri)
    with _lock:
        driver = _drivers.get(key)
        if driver is None:
            from .libvirt_driver import LibvirtDriver

            driver = _drivers[key] = LibvirtDriver(uri)
        return driver


def driver_for_host(host) -> HypervisorDriver:
    return driver_for_uri(host.libvirt_uri)
