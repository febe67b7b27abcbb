"""Domain and volume XML builders, and the few readers the driver needs. No libvirt here."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from .base import DomainSpec, GraphicsPorts, NetworkInfo, NicSpec

METADATA_NS = "https://github.com/vdi-broker/ns/desktop/1"
VNC_PASSWORD_MAX = 8  # the RFB "VNC authentication" DES key holds 8 characters


def _sub(parent, tag, text=None, **attrs):
    element = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items()})
    if text is not None:
        element.text = str(text)
    return element


def domain_xml(spec: DomainSpec) -> str:
    if spec.domain_type not in ("kvm", "qemu", "test"):
        raise ValueError(f"unknown domain type {spec.domain_type!r}")
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    if spec.metadata:
        meta = _sub(domain, "metadata")
        desktop = ET.SubElement(meta, f"{{{METADATA_NS}}}desktop")
        for key, value in sorted(spec.metadata.items()):
            desktop.set(key, str(value))
    _sub(domain, "memory", spec.memory_mib, unit="MiB")
    _sub(domain, "currentMemory", spec.memory_mib, unit="MiB")  # the balloon starts fully deflated
    _sub(domain, "vcpu", spec.vcpus)
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    _sub(os_el, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.system_disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.data_disk_path:
        data = _sub(devices, "disk", type="file", device="disk")
        _sub(data, "driver", name="qemu", type="qcow2")
        _sub(data, "source", file=spec.data_disk_path)
        _sub(data, "target", dev="vdb", bus="virtio")
    if spec.serial_log_path:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_log_path, append="off")  # one boot per log
        _sub(serial, "target", port="0")
    if spec.nic is not None:
        devices.append(interface_element(spec.nic))
    # A tablet gives absolute pointer positions, so the browser's cursor and the guest's agree.
    _sub(devices, "input", type="tablet", bus="usb")
    for kind in spec.graphics:
        if kind not in ("vnc", "spice"):
            raise ValueError(f"unknown graphics type {kind!r}")
        # Console ports listen on the host's loopback only: the broker's gateway is the one
        # way in, after it has checked the user's ticket.
        # A password from the first boot on: nobody is told this one; each console session
        # gets its own short-lived one (set_console_password). `connected='keep'`: changing
        # it never drops the consoles already open.
        password = spec.graphics_password or secrets.token_urlsafe(12)
        graphics = _sub(devices, "graphics", type=kind, autoport="yes", listen=spec.graphics_listen,
                        passwd=password[:VNC_PASSWORD_MAX] if kind == "vnc" else password, connected="keep")
        _sub(graphics, "listen", type="address", address=spec.graphics_listen)
    video = _sub(devices, "video")
    _sub(video, "model", type="vga", vram="16384", heads="1")
    # A balloon, so that the broker can take memory back from an idle desktop (and give it back
    # when its user returns); autodeflate: the guest takes it back itself before running out;
    # free page reporting: pages the guest frees go back to the host without the broker.
    balloon = _sub(devices, "memballoon", model="virtio", autodeflate="on", freePageReporting="on")
    _sub(balloon, "stats", period="5")
    return ET.tostring(domain, encoding="unicode")


NIC_KINDS = ("network", "bridge", "openvswitch")


def interface_element(nic: NicSpec) -> ET.Element:
    if nic.kind not in NIC_KINDS:
        raise ValueError(f"unknown network kind {nic.kind!r}")
    interface = ET.Element("interface", type="network" if nic.kind == "network" else "bridge")
    _sub(interface, "mac", address=nic.mac_address)
    if nic.kind == "network":
        _sub(interface, "source", network=nic.source)
    else:
        _sub(interface, "source", bridge=nic.source)
    if nic.kind == "openvswitch":
        _sub(interface, "virtualport", type="openvswitch")
        if nic.vlan_tag is not None:
            vlan = _sub(interface, "vlan")
            _sub(vlan, "tag", id=nic.vlan_tag)
    elif nic.vlan_tag is not None:
        raise ValueError("a VLAN tag needs an Open vSwitch bridge")
    _sub(interface, "model", type="virtio")
    if nic.isolated:
        # The kernel bridge's port isolation: no frame between two isolated ports (other
        # desktops of isolated pools); the host (gateway, DHCP) and the uplink stay reachable.
        _sub(interface, "port", isolated="yes")
    if nic.clean_traffic:
        filterref = _sub(interface, "filterref", filter="clean-traffic")
        # The address the filter allows is the one a DHCP answer gave, never one the guest picks.
        _sub(filterref, "parameter", name="CTRL_IP_LEARNING", value="dhcp")
        if nic.dhcp_server:
            _sub(filterref, "parameter", name="DHCPSERVER", value=nic.dhcp_server)
    return interface


def with_destination_nic(domain_xml_text: str, nic: NicSpec | None, *, ip: str | None = None) -> str:
    """A running domain's XML for the host it moves to: its network card plugged in as that host
    names the pool's network (a libvirt network here, a bridge there). The card keeps its MAC,
    model and PCI address, so the guest sees the same device. `ip`: the address the source's
    filter learned, given to the destination's filter at once (the guest does not ask DHCP
    again after a move, and a filter still learning would drop its traffic until it did)."""
    root = ET.fromstring(domain_xml_text)
    devices = root.find("./devices")
    old = devices.find("./interface") if devices is not None else None
    if old is None:
        return domain_xml_text  # no card to re-plug (a pool that had no network when it started)
    if nic is None:
        raise ValueError("the desktop's pool has no network on the destination host")
    new = interface_element(nic)
    if ip and nic.clean_traffic:
        _sub(new.find("./filterref"), "parameter", name="IP", value=ip)
    address = old.find("./address")
    if address is not None:
        new.append(address)
    index = list(devices).index(old)
    devices.remove(old)
    devices.insert(index, new)
    return ET.tostring(root, encoding="unicode")


def with_serial_log_appended(domain_xml_text: str) -> str:
    """A running domain's XML for the host it moves to, its serial log opened for appending:
    the destination's QEMU writes to the same file (shared storage), which "one boot per log"
    would truncate at the move, losing the guest's history the admin reads when it misbehaves.
    The persistent definition keeps append="off": a cold boot still starts a fresh log."""
    root = ET.fromstring(domain_xml_text)
    for source in root.findall("./devices/serial[@type='file']/source"):
        source.set("append", "on")
    return ET.tostring(root, encoding="unicode")


def read_network_info(network_xml: str, *, active: bool) -> NetworkInfo:
    root = ET.fromstring(network_xml)
    bridge = root.find("./bridge")
    address = None
    for ip in root.findall("./ip"):
        if ip.get("family", "ipv4") == "ipv4" and ip.get("address"):
            address = ip.get("address")
            break
    return NetworkInfo(name=root.findtext("name") or "", active=active,
                       bridge=bridge.get("name") if bridge is not None else None, ipv4_address=address)


def volume_xml(*, name: str, capacity_bytes: int, backing_path: str | None = None) -> str:
    volume = ET.Element("volume", type="file")
    _sub(volume, "name", name)
    _sub(volume, "capacity", capacity_bytes, unit="bytes")
    target = _sub(volume, "target")
    _sub(target, "format", type="qcow2")
    if backing_path:
        backing = _sub(volume, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type="qcow2")
    return ET.tostring(volume, encoding="unicode")


def backup_xml(*, domain_xml_text: str, disk_path: str, target_path: str) -> str:
    """A push-mode <domainbackup> that copies the domain's disk whose source is `disk_path` to
    a qcow2 file at `target_path`, and no other disk. Raises ValueError if no disk has that source."""
    root = ET.fromstring(domain_xml_text)
    backup = ET.Element("domainbackup", mode="push")
    disks = _sub(backup, "disks")
    found = False
    for disk in root.findall("./devices/disk"):
        target = disk.find("./target")
        source = disk.find("./source")
        if target is None or disk.get("device", "disk") != "disk":
            continue
        if source is not None and source.get("file") == disk_path:
            found = True
            chosen = _sub(disks, "disk", name=target.get("dev"), type="file")
            _sub(chosen, "target", file=target_path)
            _sub(chosen, "driver", type="qcow2")
        else:
            _sub(disks, "disk", name=target.get("dev"), backup="no")
    if not found:
        raise ValueError(f"the domain has no disk {disk_path}")
    return ET.tostring(backup, encoding="unicode")


def read_pool_path(pool_xml: str) -> str:
    return ET.fromstring(pool_xml).findtext("./target/path") or ""


def dir_pool_xml(*, name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", path)
    return ET.tostring(pool, encoding="unicode")


def read_graphics_ports(live_xml: str) -> GraphicsPorts:
    root = ET.fromstring(live_xml)
    ports: dict[str, int | None] = {"vnc": None, "spice": None}
    listen = "127.0.0.1"
    for graphics in root.findall("./devices/graphics"):
        kind = graphics.get("type")
        port = graphics.get("port")
        if kind in ports and port and int(port) > 0:
            ports[kind] = int(port)
            listen = graphics.get("listen") or listen
    return GraphicsPorts(listen=listen, vnc=ports["vnc"], spice=ports["spice"])


def graphics_with_password(live_xml: str, *, protocol: str, password: str, valid_until: datetime) -> str:
    """The domain's <graphics type=protocol> element with a new password, as device XML for
    updateDeviceFlags. Everything else (port, listen) stays as the live definition has it."""
    root = ET.fromstring(live_xml)
    for graphics in root.findall("./devices/graphics"):
        if graphics.get("type") == protocol:
            graphics.set("passwd", password)
            graphics.set("passwdValidTo", valid_until.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
            graphics.set("connected", "keep")
            return ET.tostring(graphics, encoding="unicode")
    raise ValueError(f"the domain has no {protocol} console")
