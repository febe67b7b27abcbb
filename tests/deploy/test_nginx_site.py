"""The nginx site shipped in deploy/nginx/vdi.conf, run in Debian's nginx in front of a real
portal (VDI_FORWARDED_ALLOW_IPS=127.0.0.1, as docs/production.md sets it) and gateway: TLS,
the redirect from HTTP, X-Forwarded-For/-Proto and X-Request-ID set by the proxy and believed
from it only, a login through it (CSRF checks the scheme and host it forwards), and a websocket
upgraded through it. The site is installed with this test's ports, certificate and log paths:
the only lines an operator edits too."""

import http.client
import json
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings
from websockets.sync.client import connect

from broker.models import Desktop, DesktopState
from config.serve import uvicorn_argv
from tests.support.stack import BIN, ROOT, LiveStack, free_port

pytestmark = [pytest.mark.django_db(transaction=True)]
SITE = ROOT / "deploy" / "nginx" / "vdi.conf"
CLIENT = "127.0.0.2"  # the browser's address: loopback, but not the proxy's


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/var/lib/vdi/tools/nginx"
    if not Path(found).exists():
        pytest.fail("nginx is missing: scripts/install-deps.sh --test unpacks Debian's")
    return found


class BehindProxy(LiveStack):
    """The portal and the gateway as the units run them, believing the proxy on 127.0.0.1."""

    def env(self) -> dict:
        return {**super().env(), "VDI_FORWARDED_ALLOW_IPS": "127.0.0.1", "VDI_HTTPS": "on",
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,console.example.com"}

    def start(self):
        self.gateway_port = free_port()
        self._spawn("portal-behind-nginx", uvicorn_argv(str(BIN / "python"), "config.asgi:application",
                                                         "--host", "127.0.0.1", "--port", str(self.port)))
        self._spawn("gateway-behind-nginx", uvicorn_argv(str(BIN / "python"), "config.gateway_asgi:application",
                                                          "--host", "127.0.0.1", "--port", str(self.gateway_port)))


def installed_site(*, portal: int, gateway: int, http_port: int, https_port: int, tls: Path, logs: Path) -> str:
    site = SITE.read_text()
    for old, new in {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{portal};",
        "server 127.0.0.1:8001;": f"server 127.0.0.1:{gateway};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/ssl/vdi/": f"{tls}/",
        "/var/log/nginx/": f"{logs}/",
    }.items():
        assert old in site, f"deploy/nginx/vdi.conf no longer has {old!r}: update this test's install step"
        site = site.replace(old, new)
    return site


@pytest.fixture
def proxy(tmp_path, django_db_setup):
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:console.example.com",
                    "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
                   check=True, capture_output=True)
    stack = BehindProxy()
    stack.start()
    try:
        yield from _serve(stack, tmp_path, tls)
    finally:
        stack.stop()


def _serve(stack, tmp_path, tls):
    ports = {"http_port": free_port(), "https_port": free_port()}
    (tmp_path / "vdi.conf").write_text(installed_site(portal=stack.port, gateway=stack.gateway_port, tls=tls,
                                                      logs=tmp_path, **ports))
    temp = "".join(f"{kind}_temp_path {tmp_path}/{kind};\n" for kind in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nuser root;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n{temp}access_log {tmp_path}/access.log;\ninclude {tmp_path}/vdi.conf;\n}}\n")
    nginx = [nginx_binary(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    checked = subprocess.run([*nginx, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0 and "syntax is ok" in checked.stderr, checked.stderr
    server = subprocess.Popen(nginx, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "nginx.out", "w"))
    context = ssl.create_default_context(cafile=str(tls / "fullchain.pem"))
    try:
        wait_until_served(server, ports, context, stack, tmp_path)
        yield stack, ports, context
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_until_served(server, ports, context, stack, tmp_path):
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = https(ports["https_port"], context, "GET", "/healthz")
            gateway = https(ports["https_port"], context, "GET", "/healthz", host="console.example.com")
            if answer.status == gateway.status == 200:
                break
        except OSError:
            pass
        assert server.poll() is None, (tmp_path / "nginx.out").read_text()
        assert time.monotonic() < deadline, f"nothing answered through nginx; see {stack.log_dir}"
        time.sleep(0.3)


def https(port, context, method, path, *, host=None, headers=None, body=None, source=CLIENT):
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15,
                                             source_address=(source, 0))
    # `host`: another server name of the site (the console tier's), at the same address.
    connection.request(method, path, body=body, headers={**({"Host": host} if host else {}), **(headers or {})})
    answer = connection.getresponse()
    answer.body = answer.read()
    connection.close()
    return answer


def portal_lines(stack, request_id) -> list[dict]:
    text = (stack.log_dir / "portal-behind-nginx.log").read_text()
    return [json.loads(l) for l in text.splitlines() if l.startswith("{") and request_id in l]


def test_the_site_proxies_tls_forwarded_headers_request_ids_and_websockets(proxy, employee, pool, host):
    stack, ports, context = proxy
    origin = f"https://127.0.0.1:{ports['https_port']}"

    # Plain HTTP is sent to HTTPS.
    plain = http.client.HTTPConnection("127.0.0.1", ports["http_port"], timeout=10, source_address=(CLIENT, 0))
    plain.request("GET", "/login/")
    assert plain.getresponse().status == 301

    # The request id is the proxy's, whatever the client sent; the address is the client's as
    # the proxy saw it, whatever the client claimed.
    page = https(ports["https_port"], context, "GET", "/login/",
                 headers={"X-Request-ID": "client-picked", "X-Forwarded-For": "203.0.113.9"})
    assert page.status == 200
    request_id = page.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id  # nginx's $request_id
    time.sleep(0.5)
    (finished,) = [l for l in portal_lines(stack, request_id) if l["event"] == "request_finished"]
    assert finished["ip"] == CLIENT and finished["request"] == "GET /login/"
    assert "client-picked" not in (stack.log_dir / "portal-behind-nginx.log").read_text()

    # The same headers sent straight to the portal (not from the proxy) are not believed.
    direct = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10, source_address=(CLIENT, 0))
    direct.request("GET", "/healthz", headers={"X-Request-ID": "direct-picked", "X-Forwarded-For": "203.0.113.9"})
    answer = direct.getresponse()
    assert answer.status == 200 and answer.headers.get("X-Request-ID", "") != "direct-picked"

    # A login through the proxy: the portal sees https and the browser's host and port (CSRF).
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body.decode()).group(1)
    cookie = re.search(r"csrftoken=([^;]+)", " ".join(page.headers.get_all("Set-Cookie"))).group(1)
    logged_in = https(ports["https_port"], context, "POST", "/login/",
                      body=f"username=alice&password=correct-horse-9&csrfmiddlewaretoken={csrf}",
                      headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin,
                               "Referer": f"{origin}/login/", "Cookie": f"csrftoken={cookie}"})
    assert logged_in.status == 302, logged_in.body[:300]
    (session_cookie,) = [c for c in logged_in.headers.get_all("Set-Cookie")
                         if c.startswith(f"{settings.SESSION_COOKIE_NAME}=")]
    session = session_cookie.split(";")[0].split("=", 1)[1]
    assert "Secure" in session_cookie

    # A websocket through the proxy (upgraded by it): the launch page's progress.
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-behind-nginx", state=DesktopState.QUEUED)
    with connect(f"wss://127.0.0.1:{ports['https_port']}/ws/launch/{desktop.pk}/", ssl=context, origin=origin,
                 additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
                 open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["state"] == DesktopState.QUEUED
