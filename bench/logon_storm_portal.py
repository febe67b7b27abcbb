"""The portal process of bench/logon_storm.py's cheap backend: `python -m config.serve` exactly,
with one libvirt call made a no-op for libvirt test-driver hosts only.

libvirt's test driver has no virDomainUpdateDeviceFlags, so it cannot take a console's one-time
password (broker.hypervisor.libvirt_driver.LibvirtDriver.set_console_password). On those hosts
the call returns at once; everything around it (the live definition read for the port, the
ticket, the gateway's VNC login with the password) runs as on a real host. The TCG backend
runs config.serve itself, where the call is made on the real libvirtd.
"""

import os
import sys

from broker.hypervisor import libvirt_driver
from config import serve

_set_console_password = libvirt_driver.LibvirtDriver.set_console_password


def set_console_password(self, name, *, protocol, password, valid_for_s):
    if self.uri.startswith("test:"):
        return None
    return _set_console_password(self, name, protocol=protocol, password=password, valid_for_s=valid_for_s)


def patch() -> None:
    libvirt_driver.LibvirtDriver.set_console_password = set_console_password


def __getattr__(name):
    """`bench.logon_storm_portal:application`: config.asgi's, patched first (also in each of
    uvicorn's --workers processes, which import the app by this name)."""
    if name == "application":
        patch()
        from config.asgi import application

        return application
    raise AttributeError(name)


if __name__ == "__main__":
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "24")  # as config.serve's __main__
    serve.main(sys.argv[1:] + serve.CONSOLE_OPTIONS + serve.LIMIT_OPTIONS + serve.proxy_options(), prog_name="uvicorn")


async def hello(scope, receive, send):
    """The reference: a bare ASGI app that answers every request "ok" (no Django)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
