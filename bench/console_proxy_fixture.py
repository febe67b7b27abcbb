"""The broker's side of the console proxy bench: settings, rows, login sessions, tickets.

Everything a browser needs to reach the gateway as deployed: a user with a real Django login
session (its cookie), a running desktop whose console port is the bench's fake VM, and a
one-time console ticket per connection issued by broker.console.tickets, bound to the
portal's origin. The desktops' VMs are domains of libvirt's test driver, read from a node
file (test:///<file>) whose graphics port is the fake VM's: the gateway resolves every
console's port from that live definition when it connects, as it does against QEMU. One user with one desktop per console slot, so that per-user and
per-desktop console limits never refuse a bench connection.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELERY_BROKER_URL = "redis://127.0.0.1:6379/14"
CHANNEL_LAYER_PREFIX = "vdibench"
NAME_PREFIX = "vdibench-"


def configure_environment(*, var_dir: Path, database_url: str | None) -> dict:
    """Point settings at the bench's own state; must run before Django is imported.

    Returns the environment for the processes the bench starts (uvicorn shares the database)."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "CELERY_BROKER_URL": CELERY_BROKER_URL,
        "CHANNEL_LAYER_PREFIX": CHANNEL_LAYER_PREFIX,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "PYTHONUNBUFFERED": "1",
    })
    # bench/ is sys.path[0] when run as a script; the project packages live one level up.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return dict(os.environ)


@dataclass
class Slot:
    """One browser: its login session and its desktop."""

    user: object
    cookie: str
    desktop: object


def migrate(*, given_database: bool) -> None:
    from django.core.management import call_command

    from broker.models import Host

    call_command("migrate", verbosity=0, interactive=False)
    if given_database and Host.objects.exists():
        raise RuntimeError("--database-url must name an empty database (it has hosts already)")


NODE_DOMAIN = """  <domain type='test'>
    <name>{name}</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices><graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/></devices>
  </domain>
"""


def desktop_name(i: int) -> str:
    return f"{NAME_PREFIX}console-{i:04d}"


def write_node_file(path: Path, *, count: int, vm_port: int) -> str:
    """libvirt's test driver node with `count` running domains on the fake VM's port; its URI."""
    path.write_text("<node>\n" + "".join(NODE_DOMAIN.format(name=desktop_name(i), port=vm_port)
                                         for i in range(count)) + "</node>\n")
    return f"test://{path}"


def create_slots(*, count: int, vm_port: int, node_file: Path) -> list[Slot]:
    """`count` users, each entitled to the bench pool, logged in, with a running desktop."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client

    from broker.models import Desktop, DesktopState, Entitlement, GoldenImage, GoldenImageVersion, Host, Pool

    User = get_user_model()
    with transaction.atomic():
        host = Host.objects.create(name="console-bench", domain_type="qemu", console_address="127.0.0.1",
                                   libvirt_uri=write_node_file(node_file, count=count, vm_port=vm_port))
        image = GoldenImage.objects.create(name="bench-console", display_name="Console bench")
        # No libvirt check: no desktop is ever cloned from it.
        version = GoldenImageVersion.objects.create(image=image, number=1, path="/nonexistent/bench.qcow2")
        pool = Pool.objects.create(name="console-bench", display_name="Console bench", image=image, host=host)
        users = User.objects.bulk_create(
            [User(username=f"{NAME_PREFIX}{i:04d}", password="!") for i in range(count)]
        )
        if not users[0].pk:  # databases that do not return ids from bulk_create
            users = list(User.objects.filter(username__startswith=NAME_PREFIX).order_by("username"))
        Entitlement.objects.bulk_create([Entitlement(pool=pool, user=user) for user in users])
        Desktop.objects.bulk_create([
            Desktop(pool=pool, user=user, host=host, image_version=version, name=desktop_name(i),
                    state=DesktopState.RUNNING, vnc_port=vm_port)
            for i, user in enumerate(users)
        ])
        desktops = {d.user_id: d for d in Desktop.objects.filter(pool=pool).select_related("pool", "host")}
        slots = []
        for user in users:
            client = Client()
            client.force_login(user)  # a real login: session row, cookie, user_logged_in
            cookie = client.cookies[_session_cookie_name()].value
            slots.append(Slot(user=user, cookie=cookie, desktop=desktops[user.pk]))
    return slots


def _session_cookie_name() -> str:
    from django.conf import settings

    return settings.SESSION_COOKIE_NAME


def session_cookie_header(cookie: str) -> str:
    return f"{_session_cookie_name()}={cookie}"


def issue_tickets(slots: list[Slot], *, origin: str, vm_password: str | None) -> list[str]:
    """One single-use console ticket per slot, as the portal issues them to the console page.

    The portal's grant_console() first gives the domain a one-time VNC password through
    libvirt and hands it to issue_console_ticket(), which seals it into the ticket for the
    gateway to answer the VM with. The fake VM has a fixed password instead, so it is what
    goes into the ticket. (A gateway without proxy-side authentication takes no password;
    the browser then answers the VM itself.)

    Each ticket in its own autocommit, as the portal's requests do: a transaction around them
    all would read, then ask SQLite for the write lock while the gateway writes, and fail at
    once ("database is locked") instead of waiting."""
    from broker.console.tickets import issue_console_ticket

    extra = {}
    if vm_password and "console_password" in inspect.signature(issue_console_ticket).parameters:
        extra["console_password"] = vm_password
    return [
        issue_console_ticket(user=slot.user, session_key=slot.cookie, desktop=slot.desktop, protocol="vnc",
                             origin=origin, **extra)
        for slot in slots
    ]


class _OverCapacity(logging.Handler):
    """Counts the channel layer's "over capacity" notes: group messages it dropped."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.dropped = 0

    def emit(self, record):
        if "over capacity" in record.getMessage():
            self.dropped += record.args[0] if record.args else 1


_over_capacity = _OverCapacity()


def quiet_bench_logging() -> None:
    """The bench's own Django logs at WARNING, except the channel layer's drops, counted."""
    logging.getLogger().setLevel(logging.WARNING)
    layer_log = logging.getLogger("channels_redis.core")
    layer_log.setLevel(logging.INFO)
    layer_log.propagate = False
    layer_log.addHandler(_over_capacity)


def close_consoles_of_users(user_ids: list[int], *, code: int) -> int:
    """What a logout or a lost entitlement sends (console_control.close_consoles), to many
    users at once: from one event loop, so that the sending is not what takes the time
    (close_consoles() makes a new loop and Redis connection per call). Returns how many
    messages the channel layer dropped because a receiving process's queue was full."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from broker.console import control as console_control

    layer = get_channel_layer()
    message = {"type": "console.terminate", "code": code, "reason": "Closed by the console benchmark."}

    async def send_all():
        for user_id in user_ids:
            await layer.group_send(console_control.user_group(user_id), message)

    dropped_before = _over_capacity.dropped
    async_to_sync(send_all)()
    return _over_capacity.dropped - dropped_before


def delete_rows() -> None:
    """Rows in a database the caller gave us (a temporary SQLite file just goes away)."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session

    from broker.models import ConsoleSession, ConsoleTicket, Desktop, GoldenImage, Host, Pool

    users = get_user_model().objects.filter(username__startswith=NAME_PREFIX)
    ConsoleSession.objects.filter(user__in=users).delete()
    ConsoleTicket.objects.filter(user__in=users).delete()
    Desktop.objects.filter(pool__name="console-bench").delete()
    Pool.objects.filter(name="console-bench").delete()
    GoldenImage.objects.filter(name="bench-console").delete()
    Host.objects.filter(name="console-bench", libvirt_uri__startswith="test://").delete()
    user_ids = {str(pk) for pk in users.values_list("pk", flat=True)}
    for session in Session.objects.all().iterator():
        if session.get_decoded().get("_auth_user_id") in user_ids:
            session.delete()
    users.delete()
