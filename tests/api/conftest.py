"""A site of two pools, A and B, each with its image, host, desktops, console sessions,
entitlements and events; and one user of every API role."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from api.models import AUDITORS_GROUP, OperatorScope
from broker.models import (
    BrokerEvent,
    ConsoleSession,
    Desktop,
    DesktopState,
    Entitlement,
    GoldenImage,
    GoldenImageVersion,
    Host,
    LiveMigration,
    Pool,
)

S = DesktopState


@dataclass
class Side:
    pool: Pool
    host: Host
    image: GoldenImage
    version: GoldenImageVersion
    desktop: Desktop  # assigned, running
    spare: Desktop
    console: ConsoleSession
    entitlement: Entitlement
    event: BrokerEvent
    migration: LiveMigration


def build_side(letter: str, django_user_model, employees: Group) -> Side:
    image = GoldenImage.objects.create(name=f"img-{letter}", display_name=f"Image {letter}")
    version = GoldenImageVersion.objects.create(image=image, number=1, path=f"/images/{letter}.qcow2")
    host = Host.objects.create(name=f"hv-{letter}", libvirt_uri="test:///default", cpus=8, memory_mib=16384,
                               storage_group="shared", last_checked_at=None)
    pool = Pool.objects.create(name=f"pool-{letter}", display_name=f"Pool {letter}", image=image,
                               kind=Pool.Kind.FLOATING if letter == "a" else Pool.Kind.DEDICATED)
    user = django_user_model.objects.create_user(f"employee-{letter}")
    desktop = Desktop.objects.create(pool=pool, user=user, host=host, image_version=version, name=f"vdi-{letter}-1",
                                     state=S.RUNNING)
    desktop.note("made for the test")
    spare = Desktop.objects.create(pool=pool, host=host, image_version=version, name=f"vdi-{letter}-2",
                                   state=S.STOPPED)
    console = ConsoleSession.objects.create(user=user, desktop=desktop, protocol="vnc", bytes_to_client=1000 + 1,
                                            bytes_to_desktop=10)
    entitlement = Entitlement.objects.create(pool=pool, group=employees)
    event = BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=pool, message=f"pool {letter} event")
    migration = LiveMigration.objects.create(desktop=desktop, source=host, reason=LiveMigration.Reason.ADMIN,
                                             state=LiveMigration.State.FAILED, error="test")
    return Side(pool, host, image, version, desktop, spare, console, entitlement, event, migration)


@pytest.fixture
def employees(db):
    return Group.objects.create(name="Employees")


@pytest.fixture
def site(db, django_user_model, employees):
    a = build_side("a", django_user_model, employees)
    b = build_side("b", django_user_model, employees)
    return a, b


def _client_for(user) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user
    return client


ROLES = ["superuser", "staff", "operator", "group_operator", "auditor", "nobody"]


@pytest.fixture
def clients(site, django_user_model):
    """A token client per role. staff: every broker model permission (as an admin who is not a
    superuser); operator: OperatorScope for pool A; group_operator: the same through a group;
    auditor: the Auditors group; nobody: an employee with no role."""
    a, _ = site
    users = {
        "superuser": django_user_model.objects.create_superuser("root", password="root-pass-1"),
        "staff": django_user_model.objects.create_user("staffer", is_staff=True),
        "operator": django_user_model.objects.create_user("op-a"),
        "group_operator": django_user_model.objects.create_user("op-group"),
        "auditor": django_user_model.objects.create_user("auditor", is_staff=True),
        "nobody": django_user_model.objects.create_user("employee"),
    }
    users["staff"].user_permissions.add(*Permission.objects.filter(content_type__app_label="broker"))
    OperatorScope.objects.create(user=users["operator"]).pools.add(a.pool)
    pool_a_ops = Group.objects.create(name="Pool A operators")
    users["group_operator"].groups.add(pool_a_ops)
    OperatorScope.objects.create(group=pool_a_ops).pools.add(a.pool)
    users["auditor"].groups.add(Group.objects.get_or_create(name=AUDITORS_GROUP)[0])
    # An auditor holding change permissions still writes nothing.
    users["auditor"].user_permissions.add(*Permission.objects.filter(content_type__app_label="broker"))
    return {role: _client_for(user) for role, user in users.items()}
