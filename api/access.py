"""Who may read /metrics and /readyz's details: a client address in VDI_METRICS_ALLOW (addresses
or networks), or a request carrying "Authorization: Bearer <VDI_METRICS_TOKEN>"."""

import hmac
import ipaddress

from django.conf import settings


def _networks():
    networks = []
    for item in settings.VDI_METRICS_ALLOW:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return networks


def may_scrape(request) -> bool:
    token = settings.VDI_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in _networks())
