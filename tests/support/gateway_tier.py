"""A console gateway running as its own process, the way a separate proxy tier runs it:
config/gateway_asgi.py under uvicorn, or a stock websockify with the broker's plugin."""

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from config.serve import uvicorn_argv
from tests.support.stack import BIN, ROOT, free_port


@dataclass
class GatewayEndpoint:
    """What tests.support.console_client needs: where to connect, and the page's origin."""

    port: int
    base_url: str  # the portal's origin: the page that opened the console


class GatewayProcess:
    def __init__(self, stack, kind: str = "asgi", **environment: str):
        assert kind in ("asgi", "websockify")
        self.stack, self.kind, self.environment = stack, kind, environment
        self.port = free_port()
        self.endpoint = GatewayEndpoint(port=self.port, base_url=stack.base_url)
        self.log_path = Path(stack.log_dir) / f"gateway-{kind}.log"

    def __enter__(self):
        env = {**self.stack.env(), "VDI_CONSOLE_ALLOWED_ORIGINS": self.stack.base_url, **self.environment}
        if self.kind == "asgi":
            argv = uvicorn_argv(str(BIN / "python"), "config.gateway_asgi:application", "--host", "127.0.0.1",
                                "--port", str(self.port))
        else:
            argv = [sys.executable, "-m", "websockify", "--token-plugin",
                    "broker.console.websockify_plugin.BrokerTickets", "--auth-plugin",
                    "broker.console.websockify_plugin.BrokerLogin", f"127.0.0.1:{self.port}"]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.kind} gateway exited; see {self.log_path}")
            try:
                if self.kind == "asgi":
                    urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                else:
                    import socket

                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the {self.kind} gateway did not come up; see {self.log_path}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
