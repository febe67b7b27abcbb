import ipaddress


def client_address_of(request) -> str | None:
    """The client's IP address as the ASGI server saw it. Behind a reverse proxy, set
    VDI_FORWARDED_ALLOW_IPS=<proxy> (config/serve.py) so this is the browser's address, not the proxy's."""
    address = (getattr(request, "META", None) or {}).get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None
