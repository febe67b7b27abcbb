"""What an employee sees: login, "My desktops", Launch, progress, console ticket."""

import hashlib

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.urls import reverse

from broker.models import ConsoleTicket, Desktop, DesktopState, Entitlement, Pool
from tests.support.tasks import tasks_among

S = DesktopState


@pytest.fixture
def logged_in(client, employee):
    client.force_login(employee)
    return client


def test_the_login_page_explains_a_wrong_password(client, employee):
    response = client.post(reverse("portal:login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_a_good_password_leads_to_my_desktops(client, employee):
    response = client.post(reverse("portal:login"), {"username": "alice", "password": "correct-horse-9"},
                           follow=True)
    assert response.redirect_chain[-1][0] == reverse("portal:home")
    assert b"My desktops" in response.content


def test_my_desktops_needs_a_login(client):
    response = client.get(reverse("portal:home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))


def test_my_desktops_lists_pools_entitled_directly_or_by_group_and_no_others(logged_in, employee, pool, image):
    direct = Pool.objects.create(name="direct", display_name="Direct pool", image=image)
    Entitlement.objects.create(pool=direct, user=employee)
    Pool.objects.create(name="secret", display_name="Finance pool", image=image)
    others = Group.objects.create(name="Finance")
    Entitlement.objects.create(pool=Pool.objects.get(name="secret"), group=others)

    content = logged_in.get(reverse("portal:home")).content.decode()
    assert "Office desktop" in content  # through the Employees group
    assert "Direct pool" in content
    assert "Finance pool" not in content


def test_a_disabled_pool_is_not_offered(logged_in, pool):
    Pool.objects.filter(pk=pool.pk).update(is_enabled=False)
    assert "Office desktop" not in logged_in.get(reverse("portal:home")).content.decode()


def test_launch_creates_one_desktop_and_queues_its_provisioning(logged_in, employee, pool,
                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee, pool=pool)
    assert response["Location"] == reverse("portal:desktop", args=[desktop.pk])
    assert desktop.state == S.QUEUED and desktop.name == f"{settings.VDI_NAME_PREFIX}desk-0001"
    assert len(tasks_among(callbacks)) == 1  # one provisioning task, sent after commit

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = logged_in.post(reverse("portal:launch", args=[pool.pk]))
    assert again["Location"] == response["Location"]
    assert Desktop.objects.filter(user=employee).count() == 1
    assert callbacks == []  # already on its way: nothing more to enqueue


def test_launch_of_a_pool_one_is_not_entitled_to_is_refused(client, other_employee, image):
    secret = Pool.objects.create(name="secret", display_name="Finance pool", image=image)
    client.force_login(other_employee)
    assert client.post(reverse("portal:launch", args=[secret.pk])).status_code == 404
    assert not Desktop.objects.exists()


def test_launch_needs_a_post(logged_in, pool):
    assert logged_in.get(reverse("portal:launch", args=[pool.pk])).status_code == 405


def test_launch_without_a_published_image_says_what_to_do(logged_in, pool):
    pool.image.versions.update(is_published=False)
    response = logged_in.post(reverse("portal:launch", args=[pool.pk]), follow=True)
    assert b"has no published version yet. Tell your administrator." in response.content
    assert not Desktop.objects.exists()


def test_launch_without_an_enabled_host_says_so(logged_in, pool, host):
    host.is_enabled = False
    host.save()
    response = logged_in.post(reverse("portal:launch", args=[pool.pk]), follow=True)
    assert b"No hypervisor host has room for a new desktop right now" in response.content


def test_launch_of_a_failed_desktop_retries_it(logged_in, employee, pool, django_capture_on_commit_callbacks):
    logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee)
    Desktop.objects.filter(pk=desktop.pk).update(state=S.FAILED, last_error="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop.refresh_from_db()
    assert desktop.state == S.QUEUED and desktop.last_error == ""
    assert len(tasks_among(callbacks)) == 1


def test_launch_of_a_stopped_desktop_powers_it_on(logged_in, employee, pool, django_capture_on_commit_callbacks):
    logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee)
    Desktop.objects.filter(pk=desktop.pk).update(state=S.STOPPED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop.refresh_from_db()
    assert desktop.state == S.STARTING and len(tasks_among(callbacks)) == 1


def test_the_status_shows_the_launch_steps(logged_in, employee, pool):
    logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee)
    desktop.transition(S.CLONING)
    status = logged_in.get(reverse("portal:desktop-status", args=[desktop.pk])).json()
    assert status["state"] == "cloning" and not status["ready"]
    assert [(s["state"], s["status"]) for s in status["steps"]] == [
        ("queued", "done"), ("cloning", "active"), ("starting", "pending"), ("running", "pending")]


def test_a_failed_launch_tells_the_user_what_to_do(logged_in, employee, pool):
    logged_in.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee)
    desktop.transition(S.FAILED, last_error="golden image /x.qcow2 is not on qemu:///system")
    status = logged_in.get(reverse("portal:desktop-status", args=[desktop.pk])).json()
    assert status["failed"] and "is not on qemu:///system" in status["error"]
    assert status["hint"].startswith("Press Launch to try again")


def test_another_users_desktop_is_not_found(client, employee, other_employee, pool):
    client.force_login(employee)
    client.post(reverse("portal:launch", args=[pool.pk]))
    desktop = Desktop.objects.get(user=employee)
    client.force_login(other_employee)
    for name in ("portal:desktop", "portal:desktop-status"):
        assert client.get(reverse(name, args=[desktop.pk])).status_code == 404
    assert client.post(reverse("portal:console-ticket", args=[desktop.pk])).status_code == 404


@pytest.mark.libvirt
def test_a_console_ticket_is_issued_only_for_a_running_desktop(logged_in, employee, running_desktop):
    # The ticket reads the console port from the live domain and sets its one-time password:
    # a real running desktop.
    desktop = running_desktop
    url = reverse("portal:console-ticket", args=[desktop.pk])
    Desktop.objects.filter(pk=desktop.pk).update(state=S.STARTING)
    assert logged_in.post(url).status_code == 409

    Desktop.objects.filter(pk=desktop.pk).update(state=S.RUNNING)
    response = logged_in.post(url)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["protocol"] == "vnc"
    assert body["url"].startswith(f"ws://testserver/ws/console/{desktop.pk}/?ticket=")
    ticket = ConsoleTicket.objects.get()
    assert ticket.user == employee and ticket.desktop == desktop and ticket.origin == "http://testserver"
    token = body["url"].split("ticket=")[1]
    assert len(token) >= 40 and ticket.token_hash == hashlib.sha256(token.encode()).hexdigest()  # only the hash
    # the URL carries no host or port of the hypervisor, and no VNC password reaches the page
    assert str(desktop.vnc_port) not in body["url"] and "127.0.0.1" not in body["url"]
    assert "password" not in body and ticket.port == desktop.vnc_port


def test_a_console_ticket_needs_the_csrf_token(employee, pool, host):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(employee)
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-csrf", state=S.RUNNING, vnc_port=5999)
    assert strict.post(reverse("portal:console-ticket", args=[desktop.pk])).status_code == 403
