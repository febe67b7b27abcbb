"""The API's actions do what the admin's do, through the same services: the outcome is in the
database (and the worker's task is sent after commit), and the answer says what happened."""

from broker.models import BrokerEvent, Desktop, DesktopState, Entitlement, GoldenImageVersion, Host, LiveMigration
from tests.support.tasks import tasks_among

S = DesktopState


def url(path):
    return f"/api/v1/{path}"


def test_drain_puts_the_host_in_maintenance_and_end_maintenance_takes_it_out(clients, site):
    a, _ = site
    root = clients["superuser"]
    answer = root.post(url(f"hosts/{a.host.pk}/drain/"), {}, format="json")
    assert answer.status_code == 200
    assert answer.json() == {"host": a.host.pk, "in_maintenance": True, "changed": True, "moving": [], "staying": []}
    a.host.refresh_from_db()
    assert a.host.in_maintenance
    assert BrokerEvent.objects.filter(host=a.host, message="drained by root").exists()
    assert root.post(url(f"hosts/{a.host.pk}/drain/"), {}, format="json").json()["changed"] is False
    answer = root.post(url(f"hosts/{a.host.pk}/end-maintenance/"))
    assert answer.json()["in_maintenance"] is False and answer.json()["changed"] is True
    a.host.refresh_from_db()
    assert not a.host.in_maintenance


def test_drain_with_migrate_moves_the_running_desktops_to_a_host_of_the_storage_group(
        clients, site, django_capture_on_commit_callbacks):
    a, b = site
    with django_capture_on_commit_callbacks() as callbacks:
        answer = clients["staff"].post(url(f"hosts/{a.host.pk}/drain/"), {"migrate": True}, format="json")
    assert answer.status_code == 200
    assert answer.json()["moving"] == [a.desktop.name]  # the spare is powered off: it stays
    move = LiveMigration.objects.get(desktop=a.desktop, state=LiveMigration.State.QUEUED)
    assert move.reason == LiveMigration.Reason.DRAIN and move.source == a.host
    assert len(tasks_among(callbacks)) == 1


def test_move_queues_a_live_migration_and_a_refusal_says_why(clients, site, django_capture_on_commit_callbacks):
    a, b = site
    op = clients["operator"]
    with django_capture_on_commit_callbacks() as callbacks:
        answer = op.post(url(f"desktops/{a.desktop.pk}/move/"), {"destination": b.host.pk}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["state"] == "queued" and answer.json()["destination"] == b.host.pk
    assert LiveMigration.objects.filter(desktop=a.desktop, state="queued", requested_by=op.user).exists()
    assert len(tasks_among(callbacks)) == 1
    # The spare is powered off: it cannot move, and the answer says so.
    refused = op.post(url(f"desktops/{a.spare.pk}/move/"), {}, format="json")
    assert refused.status_code == 409
    assert "not running" in refused.json()["done"]
    lonely = Host.objects.create(name="hv-alone", libvirt_uri="test:///default", storage_group="other")
    refused = op.post(url(f"desktops/{a.desktop.pk}/move/"), {"destination": lonely.pk}, format="json")
    assert refused.status_code in (202, 409)  # already moving: the same move is returned


def test_end_session_resets_a_floating_desktop_and_powers_off_a_dedicated_one(
        clients, site, django_capture_on_commit_callbacks):
    a, b = site  # a: floating, b: dedicated
    root = clients["superuser"]
    with django_capture_on_commit_callbacks() as callbacks:
        answer = root.post(url(f"desktops/{a.desktop.pk}/end-session/"))
    assert answer.status_code == 200
    assert answer.json()["state"] == "deleting"
    a.desktop.refresh_from_db()
    assert a.desktop.state == S.DELETING and a.desktop.user_id is None  # its user gets a fresh one next time
    assert len(tasks_among(callbacks)) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        answer = root.post(url(f"desktops/{b.desktop.pk}/end-session/"))
    assert answer.json()["state"] == "running"  # the worker powers it off
    names = [c.__closure__ for c in tasks_among(callbacks)]
    assert len(names) == 1
    assert "stop_desktop_task" in repr([cell.cell_contents for cell in names[0]])


def test_delete_moves_the_desktop_to_deleting_and_sends_the_deletion(clients, site,
                                                                     django_capture_on_commit_callbacks):
    a, _ = site
    with django_capture_on_commit_callbacks() as callbacks:
        answer = clients["operator"].delete(url(f"desktops/{a.spare.pk}/"))
    assert answer.status_code == 202 and answer.json()["state"] == "deleting"
    a.spare.refresh_from_db()
    assert a.spare.state == S.DELETING
    assert a.spare.events.filter(to_state=S.DELETING, actor__username="op-a").exists()
    assert len(tasks_among(callbacks)) == 1
    Desktop.objects.filter(pk=a.spare.pk).update(state=S.DELETED)
    assert clients["operator"].delete(url(f"desktops/{a.spare.pk}/")).status_code == 409


def test_recompose_rebuilds_the_pools_desktops_on_the_new_version(clients, site):
    _, b = site
    GoldenImageVersion.objects.create(image=b.image, number=2, path="/images/b2.qcow2")
    answer = clients["superuser"].post(url(f"pools/{b.pool.pk}/recompose/"))
    assert answer.status_code == 200
    assert answer.json() == {"pool": b.pool.pk, "recomposing": 2}
    assert set(Desktop.objects.filter(pool=b.pool).values_list("state", flat=True)) == {S.RECOMPOSING}


def test_an_operator_grants_and_withdraws_their_pools_entitlements(clients, site, django_user_model):
    a, _ = site
    op = clients["group_operator"]
    someone = django_user_model.objects.create_user("someone")
    answer = op.post(url("entitlements/"), {"pool": a.pool.pk, "user": someone.pk}, format="json")
    assert answer.status_code == 201, answer.content
    entitlement = Entitlement.objects.get(pool=a.pool, user=someone)
    assert answer.json()["username"] == "someone"
    assert BrokerEvent.objects.filter(pool=a.pool, message__contains="entitled by op-group").exists()
    assert op.delete(url(f"entitlements/{entitlement.pk}/")).status_code == 204
    assert not Entitlement.objects.filter(pk=entitlement.pk).exists()
    both = op.post(url("entitlements/"), {"pool": a.pool.pk, "user": someone.pk, "group": 1}, format="json")
    assert both.status_code == 400
