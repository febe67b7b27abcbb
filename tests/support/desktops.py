from pathlib import Path

from django.conf import settings

from broker.models import Desktop, DesktopState, Host

NODE_XML = """<node>
  <domain type='test'>
    <name>{name}</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>{graphics}</devices>
  </domain>
</node>
"""
GRAPHICS_XML = "<graphics type='{kind}' port='{port}' autoport='no' listen='127.0.0.1'/>"


def libvirt_test_node_host(*, name: str, vnc_port: int | None = None, spice_port: int | None = None) -> Host:
    """A host served by libvirt's test driver from a node file of its own: one running domain
    `name` whose consoles listen on the given ports (servers of the test). Every process that
    opens the URI (this one, the portal, a gateway tier) sees the same live definition, which
    is what the gateway reads when a console connects. Disabled: nothing is ever placed on it."""
    graphics = "".join(GRAPHICS_XML.format(kind=kind, port=port)
                       for kind, port in (("vnc", vnc_port), ("spice", spice_port)) if port)
    nodes = Path(settings.VAR_DIR) / "test-nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    node_file = nodes / f"{settings.VDI_NAME_PREFIX}{name}-{vnc_port}-{spice_port}.xml"
    node_file.write_text(NODE_XML.format(name=name, graphics=graphics))
    return Host.objects.create(name=f"node-{name}"[:64], libvirt_uri=f"test://{node_file}", domain_type="qemu",
                               console_address="127.0.0.1", is_enabled=False)


def running_desktop_on(server=None, *, pool, user, name: str, spice_server=None, **fields):
    """A running desktop whose VM is a domain of libvirt's test driver with its VNC console on
    `server`'s port (and SPICE on `spice_server`'s): the gateway reaches those servers as it
    would reach QEMU's console ports."""
    vnc_port = server.port if server is not None else None
    spice_port = spice_server.port if spice_server is not None else None
    host = libvirt_test_node_host(name=name, vnc_port=vnc_port, spice_port=spice_port)
    return Desktop.objects.create(pool=pool, user=user, host=host, image_version=pool.image.current_version(),
                                  name=name, state=DesktopState.RUNNING, vnc_port=vnc_port, spice_port=spice_port,
                                  **fields)
