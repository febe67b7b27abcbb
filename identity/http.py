import ipaddress


def client_address_of(request) -> str | None:
    """The client's IP address as the ASGI server saw it. Behind a reverse proxy, run uvicorn with
    --proxy-headers --forwarded-allow-ips=<proxy> so this is the browser's address, not the proxy's."""
    address = (getattr(request, "META", None) or {}).get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None
