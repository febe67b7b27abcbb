"""Create the quick-start demo: this machine as a hypervisor and as a session host, a golden
image, VM pools, a farm with a published application, an employee and an admin."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from broker.hypervisor import HypervisorError, driver_for_host
from broker.models import Entitlement, GoldenImage, Host, Pool, PoolNetwork, PublishedApp
from broker.services.images import publish_image_version


class Command(BaseCommand):
    help = "Create (or update) the demo host, golden image, pool, employee and admin. Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--image", default=os.environ.get(
            "VDI_DEMO_IMAGE", f"{settings.VDI_IMAGE_PATH}/demo-linux-v4.qcow2"))
        parser.add_argument("--libvirt-uri", default=os.environ.get("VDI_LIBVIRT_URI", "qemu:///system"))
        parser.add_argument("--domain-type", default=os.environ.get("VDI_DOMAIN_TYPE", "qemu"),
                            choices=["kvm", "qemu"])

    def handle(self, *args, **opts):
        # Both demo hypervisors see /var/lib/vdi: one storage group, so a drain moves running
        # desktops between them by live migration.
        shared = {"storage_group": "this-machine", "migration_address": "127.0.0.1"}
        host, _ = Host.objects.update_or_create(
            name="local",
            defaults={"libvirt_uri": opts["libvirt_uri"], "domain_type": opts["domain_type"], **shared},
        )
        second = None
        if os.environ.get("VDI_DEMO_SECOND_HOST_URI"):  # scripts/start-second-libvirtd.sh
            second, _ = Host.objects.update_or_create(
                name="local-b",
                defaults={"libvirt_uri": os.environ["VDI_DEMO_SECOND_HOST_URI"], "domain_type": opts["domain_type"],
                          # High availability: declared dead after 60 s without an answer, fenced by
                          # killing that daemon's guests, its desktops restarted on "local".
                          "fence_command": f"{settings.BASE_DIR}/scripts/fence-local-daemon.sh "
                                           f"{os.environ.get('VDI_DEMO_SECOND_HOST_NAME', 'demo-host-b')}",
                          "fence_after_seconds": 60, **shared},
            )
        image, _ = GoldenImage.objects.get_or_create(
            name="demo-linux",
            defaults={"display_name": "Demo Linux", "description": "Linux kernel with a busybox shell"},
        )
        if not image.versions.filter(path=opts["image"]).exists():
            try:
                version = publish_image_version(image=image, path=opts["image"], host=host,
                                                notes="built by scripts/build-golden-image.sh")
            except HypervisorError as exc:
                raise CommandError(f"{exc}\nBuild it with: scripts/build-golden-image.sh {opts['image']}") from exc
            self.stdout.write(f"published {version} ({version.size_bytes // 2**20} MiB virtual)")
        pool, _ = Pool.objects.get_or_create(
            name="demo",
            defaults={
                "display_name": "Demo desktop",
                "description": "A personal Linux desktop that keeps its state between sessions.",
                "image": image,
                "kind": Pool.Kind.DEDICATED,
                "vcpus": 1,
                "memory_mib": 256,
            },
        )
        kiosk, _ = Pool.objects.get_or_create(
            name="kiosk",
            defaults={
                "display_name": "Kiosk desktop",
                "description": "A fresh desktop at every launch, wiped when you log off. One is kept ready.",
                "image": image,
                "kind": Pool.Kind.FLOATING,
                "vcpus": 1,
                "memory_mib": 256,
                "min_spares": 1,
                "max_desktops": 4,
                "disconnect_timeout_minutes": 15,
            },
        )
        for vm_pool in (pool, kiosk):
            self._network(vm_pool, host=host, second=second)
        farm = self._farm()
        employees, _ = Group.objects.get_or_create(name="Employees")
        for offered in (pool, kiosk, farm):
            Entitlement.objects.get_or_create(pool=offered, group=employees)

        lines = []
        demo_user = self._account(os.environ.get("VDI_DEMO_USER", "demo"), "VDI_DEMO_PASSWORD", staff=False,
                                  lines=lines)
        demo_user.groups.add(employees)
        self._account(os.environ.get("VDI_ADMIN_USER", "admin"), "VDI_ADMIN_PASSWORD", staff=True, lines=lines)
        for line in lines:
            self.stdout.write(line)

    def _network(self, pool: Pool, *, host: Host, second: Host | None) -> None:
        """The demo's desktops on the NAT network (scripts/start-nat-network.sh): on this machine's
        libvirtd the libvirt network itself; on the second daemon, which shares this machine's
        network stack but not its libvirt networks, the same network's bridge. A pool whose
        network an admin has set is left alone."""
        if pool.networks.exists():
            return
        name = os.environ.get("VDI_NAT_NETWORK", "vdi-nat")
        try:
            network = driver_for_host(host).network_info(name)
        except HypervisorError as exc:
            self.stderr.write(f"{pool.name}: desktops without a network ({exc}; scripts/start-nat-network.sh)")
            return
        PoolNetwork.objects.create(pool=pool, kind=PoolNetwork.Kind.NETWORK, name=name)
        if second is not None and network.bridge:
            PoolNetwork.objects.create(pool=pool, host=second, kind=PoolNetwork.Kind.BRIDGE, name=network.bridge,
                                       dhcp_server=network.ipv4_address)

    def _farm(self) -> Pool:
        """A farm on this machine: a shared desktop (icewm and a terminal) and one published
        application, served by this machine's own session agent (`make run` starts it)."""
        farm, _ = Pool.objects.get_or_create(
            name="shared",
            defaults={
                "display_name": "Shared desktop",
                "description": "Your own session on a shared Linux server: starts in a second, files kept.",
                "kind": Pool.Kind.FARM,
                "max_desktops": 100,
                "disconnect_timeout_minutes": 60,
            },
        )
        Host.objects.update_or_create(
            name=os.environ.get("VDI_DEMO_SESSION_HOST", "local-sessions"),
            defaults={"kind": Host.Kind.SESSION_HOST, "farm": farm, "libvirt_uri": "", "console_address": "127.0.0.1"},
        )
        PublishedApp.objects.get_or_create(
            pool=farm, name="terminal",
            defaults={"display_name": "Terminal", "command": "xterm -fa Monospace -fs 12", "icon": "terminal"},
        )
        return farm

    def _account(self, username, password_env, *, staff, lines):
        User = get_user_model()
        given = os.environ.get(password_env)
        user = User.objects.filter(username=username).first()
        role = "admin" if staff else "employee"
        if user is None or given:
            password = given or secrets.token_urlsafe(9)
            if user is None:
                user = User(username=username, is_staff=staff, is_superuser=staff)
            user.set_password(password)
            user.save()
            if given:
                lines.append(f"{role} login: {username} / (the password in ${password_env})")
            else:
                lines.append(f"{role} login: {username} / {password}   <- generated; shown only now")
                self._remember(username, password)
        else:
            lines.append(f"{role} login: {username} / (unchanged since it was set; a generated one is kept in "
                         f"{self._credentials_file()}; set ${password_env} to reset it)")
        return user

    @staticmethod
    def _credentials_file() -> Path:
        return settings.VAR_DIR / "demo-credentials"

    def _remember(self, username, password):
        path = self._credentials_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
            handle.write(f"{username} {password}\n")
