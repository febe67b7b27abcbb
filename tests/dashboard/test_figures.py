"""The dashboard's figures against a site in known states (tests/dashboard/conftest.py)."""

from dashboard import selectors


def by(rows, key, value):
    return next(row for row in rows if row[key] == value)


def test_each_host_shows_what_is_placed_on_it_against_what_it_allows(site):
    hosts = selectors.host_figures()
    big, small = by(hosts, "name", "big"), by(hosts, "name", "small")
    # Placed on big: 3 running + 1 cloning office desktops (2 vCPUs, 2 GiB each); stopped, failed
    # and deleted ones hold nothing.
    assert (big["vcpus_placed"], big["vcpus_allowed"]) == (8, 16.0)
    assert (big["memory_placed_mib"], big["memory_allowed_mib"]) == (8192, 24576)
    assert big["desktops_by_state"] == {"running": 3, "stopped": 1, "cloning": 1, "failed": 1}
    assert big["status"] == "online"
    # small: a starting and a queued lab desktop (1 vCPU, 1 GiB each); it is draining.
    assert (small["vcpus_placed"], small["memory_placed_mib"]) == (2, 2048)
    assert small["desktops_by_state"] == {"starting": 1, "queued": 1}
    assert small["status"] == "draining"
    assert big["usage"] is None  # never read from libvirt yet
    # Storage committed: each live desktop's image version (10 GiB virtual) and its data disk.
    assert big["storage_committed_bytes"] == 6 * 10 * 2**30  # the deleted desktop holds no disk
    assert small["storage_committed_bytes"] == 2 * (10 + 5) * 2**30


def test_each_pool_shows_spares_in_use_provisioning_failing_and_backoff(site):
    pools = selectors.pool_figures()
    office, lab = by(pools, "name", "office"), by(pools, "name", "lab")
    assert (office["spares_ready"], office["in_use"], office["provisioning"], office["failing"]) == (2, 2, 1, 1)
    assert office["live"] == 6 and office["backoff_until"] is None
    assert (lab["spares_ready"], lab["in_use"], lab["provisioning"], lab["failing"]) == (0, 1, 2, 0)
    assert lab["backoff_until"] is not None and lab["consecutive_failures"] == 4


def test_a_pool_past_its_backoff_is_not_shown_backing_off(site):
    from datetime import timedelta

    from django.utils import timezone

    site["lab"].backoff_until = timezone.now() - timedelta(seconds=1)
    site["lab"].save(update_fields=["backoff_until"])
    assert by(selectors.pool_figures(), "name", "lab")["backoff_until"] is None


def test_activity_counts_desktops_in_use_and_open_consoles(site):
    activity = selectors.activity()
    assert activity["desktops_in_use"] == 3  # two running office desktops and the starting lab one
    assert activity["consoles_open"] == 2
    assert activity["consoles_by_protocol"] == {"vnc": 1, "spice": 1}
    assert activity["farm_sessions"] == 0


def test_the_site_gauges_add_up_the_enabled_hypervisors(site):
    gauges = selectors.site_gauges()
    assert gauges["vcpus_placed"] == 10 and gauges["memory_placed_mib"] == 10240
    assert gauges["vcpus_allowed"] == 8 * 2.0 + 2 * 2.5
    assert gauges["memory_allowed_mib"] == 16384 * 1.5 + 4096 * 1.2
    assert (gauges["desktops_running"], gauges["desktops_in_use"], gauges["spares_ready"]) == (3, 3, 2)
    assert gauges["consoles_open"] == 2


def test_a_change_of_state_changes_the_figures(site):
    spare = site["office"].desktops.filter(state="stopped").get()
    assert spare.transition("starting", expected="stopped", message="powered on for the test")
    office = by(selectors.pool_figures(), "name", "office")
    assert (office["spares_ready"], office["provisioning"]) == (1, 2)
    assert by(selectors.host_figures(), "name", "big")["vcpus_placed"] == 10


def test_the_celery_part_names_every_queue_and_the_failed_tasks(site, settings):
    from dashboard.services.samples import record_task_failure

    record_task_failure(task_name="broker.tasks.provision_desktop_task", task_id="t1",
                        exception=RuntimeError("storage pool vdi is full"))
    state = selectors.celery_state()
    assert settings.CELERY_TASK_DEFAULT_QUEUE in state["queues"]
    assert all(isinstance(n, int) for n in state["queues"].values())  # Redis answers here
    assert state["failed_tasks_hour"] == 1 and state["failed_tasks_day"] == 1
    assert state["last_failure"]["error"] == "RuntimeError: storage pool vdi is full"
    assert state["workers_alive"] is None  # no sample has asked the workers yet


def test_housekeeping_shows_the_last_reconciliation_and_directory_sync(site):
    from django.utils import timezone

    from identity.models import DirectorySyncRun

    assert selectors.housekeeping()["last_reconciliation"] is None
    at = timezone.now()
    site["office"].last_reconciled_at = at
    site["office"].save(update_fields=["last_reconciled_at"])
    DirectorySyncRun.objects.create(status=DirectorySyncRun.Status.SUCCEEDED, trigger=DirectorySyncRun.Trigger.SCHEDULE,
                                    finished_at=at, users_seen=12)
    housekeeping = selectors.housekeeping()
    assert housekeeping["last_reconciliation"] == at.isoformat()
    assert housekeeping["directory_sync"]["status"] == "succeeded"
    assert housekeeping["directory_sync"]["users_seen"] == 12


def test_the_live_figures_take_a_constant_number_of_queries(site, django_assert_max_num_queries):
    with django_assert_max_num_queries(15):
        selectors.live_figures()
