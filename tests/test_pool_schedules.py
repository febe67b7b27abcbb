"""Capacity schedules: a pool keeps another number of spares, running or powered off, in
windows of the week. The time is passed in (`now=`), never patched."""

from datetime import datetime, time

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from broker.models import BrokerEvent, Desktop, DesktopState, Pool, PoolScheduleRule
from broker.models.schedules import ALL_WEEKDAYS, weekdays_label
from broker.selectors import pool_capacity
from broker.services.pools import reconcile_pool
from tests.support.tasks import tasks_among
from tests.support.mfa import verified_session

S = DesktopState
pytestmark = pytest.mark.django_db
MON, TUE, WED, THU, FRI, SAT, SUN = (1 << d for d in range(7))
WEEKDAYS = MON | TUE | WED | THU | FRI


def at(text: str) -> datetime:
    """An aware moment on the site's clock: at("Mon 09:59:59") is in the week of Monday
    3 March 2025 (so "Sun" is the 9th)."""
    day, clock = text.split()
    day_of_month = 3 + ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].index(day)
    parts = [int(p) for p in clock.split(":")] + [0]
    return timezone.make_aware(datetime(2025, 3, day_of_month, parts[0], parts[1], parts[2]),
                               timezone.get_default_timezone())


def rule(pool, days, start, end, spares, powered_on=True, name=""):
    return PoolScheduleRule.objects.create(pool=pool, weekdays=days, start_time=time.fromisoformat(start),
                                           end_time=time.fromisoformat(end), min_spares=spares,
                                           spares_powered_on=powered_on, name=name)


def wanted(pool, when: str) -> tuple[int, bool]:
    capacity = pool_capacity(pool=pool, now=at(when))
    return capacity.spares, capacity.powered_on


def sent_tasks(callbacks) -> list[str]:
    """The short names of the Celery tasks the captured on-commit callbacks would send."""
    names = []
    for callback in tasks_among(callbacks):
        cells = dict(zip(callback.__code__.co_freevars, (c.cell_contents for c in callback.__closure__)))
        names.append(cells["task"].name.rsplit(".", 1)[-1])
    return names


def wanted_at(pool, moment: datetime) -> int:
    return pool_capacity(pool=pool, now=moment).spares


@pytest.fixture
def office(db):
    """A pool that keeps 2 powered-off spares by default (no image: matching needs none)."""
    return Pool.objects.create(name="office", display_name="Office", kind=Pool.Kind.FLOATING, min_spares=2,
                               max_desktops=30, spares_powered_on=False)


# --- which rule applies --------------------------------------------------------------------------

def test_without_rules_the_pools_own_settings_apply_and_nothing_changes(office):
    capacity = pool_capacity(pool=office, now=at("Wed 12:00"))
    assert (capacity.spares, capacity.powered_on, capacity.rule) == (2, False, None)
    assert capacity.next is None and capacity.describe() == "2 spares, powered off"


def test_a_weekday_morning_rule_applies_from_its_start_until_just_before_its_end(office):
    rush = rule(office, WEEKDAYS, "08:00", "10:00", 20, name="Morning rush")
    assert wanted(office, "Mon 07:59:59") == (2, False)
    assert wanted(office, "Mon 08:00") == (20, True)
    assert pool_capacity(pool=office, now=at("Mon 08:00")).rule == rush
    assert wanted(office, "Mon 09:59:59") == (20, True)
    assert wanted(office, "Mon 10:00") == (2, False)
    assert wanted(office, "Fri 09:00") == (20, True)
    assert wanted(office, "Sat 09:00") == (2, False)  # not a weekday
    assert wanted(office, "Sun 09:00") == (2, False)


def test_the_next_change_is_the_next_boundary_that_changes_something(office):
    rule(office, WEEKDAYS, "08:00", "10:00", 20)
    before = pool_capacity(pool=office, now=at("Mon 07:00"))
    assert (before.next_at, before.next.spares, before.next.powered_on) == (at("Mon 08:00"), 20, True)
    during = pool_capacity(pool=office, now=at("Mon 08:00"))
    assert during.next_at == at("Mon 10:00")
    assert during.describe() == "20 spares, powered on — until Mon 10:00, then 2 spares, powered off"
    # Friday after the rush: the weekend has no rule, the next change is Monday's.
    assert pool_capacity(pool=office, now=at("Fri 10:00")).next_at == at("Mon 08:00").replace(day=10)


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts(office):
    rule(office, FRI, "20:00", "06:00", 0, powered_on=False)
    office.spares_powered_on = True
    office.save()
    assert wanted(office, "Fri 19:59") == (2, True)
    assert wanted(office, "Fri 20:00") == (0, False)
    assert wanted(office, "Sat 00:00") == (0, False)
    assert wanted(office, "Sat 05:59:59") == (0, False)
    assert wanted(office, "Sat 06:00") == (2, True)
    assert wanted(office, "Fri 03:00") == (2, True)  # Thursday night is not in the rule
    assert pool_capacity(pool=office, now=at("Fri 21:00")).next_at == at("Sat 06:00")


def test_a_sunday_night_window_runs_into_monday_morning(office):
    rule(office, SUN, "22:00", "02:00", 5)
    assert wanted(office, "Sun 21:59") == (2, False)
    assert wanted(office, "Sun 23:00") == (5, True)
    assert wanted(office, "Mon 01:59") == (5, True)  # the next week's Monday, from the rule's point of view
    assert wanted(office, "Mon 02:00") == (2, False)
    assert pool_capacity(pool=office, now=at("Sun 23:00")).next_at == at("Mon 02:00").replace(day=10)


def test_00_00_to_00_00_is_the_whole_day_and_equal_neighbours_are_no_change(office):
    rule(office, SAT | SUN, "00:00", "00:00", 0, powered_on=False, name="Weekend")
    assert wanted(office, "Fri 23:59:59") == (2, False)
    assert wanted(office, "Sat 00:00") == (0, False)
    assert wanted(office, "Sun 23:59:59") == (0, False)
    assert wanted(office, "Mon 00:00") == (2, False)
    # Saturday's window ends where Sunday's begins, with the same capacity: no change at Sun 00:00.
    assert pool_capacity(pool=office, now=at("Sat 12:00")).next_at == at("Mon 00:00").replace(day=10)


def test_rules_follow_the_sites_clock_in_winter_and_in_summer(office, settings):
    from datetime import timezone as dt_timezone

    settings.TIME_ZONE = "Europe/Berlin"
    rule(office, MON, "08:00", "10:00", 20)
    utc = dt_timezone.utc
    assert wanted_at(office, datetime(2025, 1, 6, 6, 59, tzinfo=utc)) == 2  # 07:59 in Berlin (UTC+1)
    assert wanted_at(office, datetime(2025, 1, 6, 7, 0, tzinfo=utc)) == 20  # 08:00 in Berlin
    assert wanted_at(office, datetime(2025, 7, 7, 6, 0, tzinfo=utc)) == 20  # 08:00 in Berlin (UTC+2)
    assert wanted_at(office, datetime(2025, 7, 7, 8, 0, tzinfo=utc)) == 2  # 10:00 in Berlin
    capacity = pool_capacity(pool=office, now=datetime(2025, 7, 7, 7, 0, tzinfo=utc))
    assert capacity.next_at == datetime(2025, 7, 7, 8, 0, tzinfo=utc) and capacity.next_at_label == "Mon 10:00"


def test_of_overlapping_rows_the_most_recently_started_window_wins_then_the_lowest_id(office):
    """The admin refuses overlaps; rows written around it still give one answer."""
    day = rule(office, WEEKDAYS, "07:00", "19:00", 10, name="Day")
    rush = rule(office, MON, "08:00", "10:00", 20, name="Rush")
    twin = rule(office, MON, "08:00", "10:00", 30, name="Twin")
    assert pool_capacity(pool=office, now=at("Mon 07:30")).rule == day
    assert pool_capacity(pool=office, now=at("Mon 09:00")).rule == rush  # started later than "Day"
    assert twin.pk > rush.pk
    assert pool_capacity(pool=office, now=at("Mon 10:00")).rule == day


def test_a_farm_ignores_schedule_rows(office):
    rule(office, ALL_WEEKDAYS, "00:00", "00:00", 9)
    Pool.objects.filter(pk=office.pk).update(kind=Pool.Kind.FARM, min_spares=0)
    office.refresh_from_db()
    assert pool_capacity(pool=office, now=at("Mon 09:00")).spares == 0


def test_weekday_labels():
    assert weekdays_label(WEEKDAYS) == "Mon–Fri"
    assert weekdays_label(SAT | SUN) == "Sat, Sun"
    assert weekdays_label(MON | WED | THU | FRI) == "Mon, Wed–Fri"
    assert weekdays_label(ALL_WEEKDAYS) == "every day"


# --- validation ----------------------------------------------------------------------------------

def invalid(pool, **fields) -> dict:
    values = {"weekdays": MON, "start_time": time(8), "end_time": time(10), "min_spares": 1} | fields
    with pytest.raises(ValidationError) as error:
        PoolScheduleRule(pool=pool, **values).full_clean()
    return error.value.message_dict


def test_a_rule_needs_a_weekday_and_a_window_that_is_not_empty(office):
    assert invalid(office, weekdays=0) == {"weekdays": ["Pick at least one weekday."]}
    assert "would be empty" in invalid(office, start_time=time(7), end_time=time(7))["end_time"][0]
    PoolScheduleRule(pool=office, weekdays=SAT, start_time=time(0), end_time=time(0), min_spares=0).full_clean()


def test_a_rule_may_not_keep_more_spares_than_the_pool_holds(office):
    assert invalid(office, min_spares=31) == {
        "min_spares": ["31 spares is more than the pool's maximum size (30 desktops)."]}


def test_a_farm_has_no_capacity_schedule(office):
    office.kind = Pool.Kind.FARM
    assert "keeps no spares" in invalid(office)["__all__"][0]


# --- the reconciler at a boundary ----------------------------------------------------------------

def provisioned(pool):
    """What the worker would do with the queued spares: clone, then run or keep off."""
    for desktop in Desktop.objects.filter(pool=pool, state=S.QUEUED):
        desktop.transition(S.CLONING)
        desktop.transition(S.STARTING)
        desktop.transition(S.RUNNING)


def finished(pool):
    """What the worker would do with spares being shut down, started or deleted."""
    for desktop in Desktop.objects.filter(pool=pool, state__in=(S.STOPPING, S.STARTING, S.DELETING)):
        desktop.transition({S.STOPPING: S.STOPPED, S.STARTING: S.RUNNING, S.DELETING: S.DELETED}[desktop.state])


def spares(pool, state=None):
    queryset = Desktop.objects.filter(pool=pool, user__isnull=True).exclude(state=S.DELETED)
    return queryset.filter(state=state).count() if state else queryset.count()


@pytest.fixture
def scheduled(floating, host):
    """The floating pool of the other tests: 1 running spare by default, 4 on weekday mornings."""
    floating.max_desktops = 10
    floating.save()
    rule(floating, WEEKDAYS, "08:00", "10:00", 4, name="Morning rush")
    return floating


def test_a_boundary_changes_the_number_of_spares_kept(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 07:59:59"))["created"] == 1
    assert sent_tasks(sent) == ["provision_desktop_task"]
    provisioned(scheduled)
    assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 07:59:59"))["created"] == 0

    with django_capture_on_commit_callbacks() as sent:
        assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))["created"] == 3
    assert sent_tasks(sent) == ["provision_desktop_task"] * 3
    provisioned(scheduled)
    assert spares(scheduled, S.RUNNING) == 4
    assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 09:59:59"))["removed_surplus"] == 0

    oldest = Desktop.objects.filter(pool=scheduled).order_by("pk").first()
    with django_capture_on_commit_callbacks() as sent:
        done = reconcile_pool(pool_id=scheduled.pk, now=at("Mon 10:00"))
    assert (done["removed_surplus"], done["created"]) == (3, 0)
    assert sent_tasks(sent) == ["delete_desktop_task"] * 3
    assert spares(scheduled, S.DELETING) == 3 and spares(scheduled, S.RUNNING) == 1
    assert Desktop.objects.get(pk=oldest.pk).state == S.DELETING  # the oldest go first
    assert "surplus spare removed: the pool keeps 1 now" in Desktop.objects.get(pk=oldest.pk).events.first().message
    finished(scheduled)
    assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 10:00:30"))["removed_surplus"] == 0
    assert spares(scheduled) == 1


def test_desktops_users_have_are_never_removed_or_powered_off(scheduled, employee, other_employee,
                                                              django_capture_on_commit_callbacks):
    rule(scheduled, SAT, "00:00", "00:00", 0, powered_on=False, name="Saturday")
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))
    provisioned(scheduled)
    taken = list(Desktop.objects.filter(pool=scheduled).order_by("pk")[:2])
    for desktop, user in zip(taken, [employee, other_employee]):
        Desktop.objects.filter(pk=desktop.pk).update(user=user)

    with django_capture_on_commit_callbacks():
        done = reconcile_pool(pool_id=scheduled.pk, now=at("Sat 00:00"))
    assert done["removed_surplus"] == 2
    assert [d.state for d in Desktop.objects.filter(pk__in=[d.pk for d in taken])] == [S.RUNNING, S.RUNNING]
    assert spares(scheduled, S.DELETING) == 2


def test_a_spare_claimed_between_the_reconcilers_read_and_its_write_is_not_deleted(scheduled, employee,
                                                                                   django_capture_on_commit_callbacks):
    from broker.services.assignment import launch_desktop
    from broker.services.pools import STILL_A_SPARE

    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))
        provisioned(scheduled)
        read_by_the_reconciler = Desktop.objects.filter(pool=scheduled).order_by("pk").first()
        Desktop.objects.exclude(pk=read_by_the_reconciler.pk).delete()
        mine = launch_desktop(user=employee, pool=scheduled)  # the launch lands first
    assert mine.pk == read_by_the_reconciler.pk
    assert not read_by_the_reconciler.transition(S.DELETING, expected={S.RUNNING, S.STOPPED}, where=STILL_A_SPARE)
    assert Desktop.objects.get(pk=mine.pk).state == S.RUNNING


def test_a_powered_off_window_shuts_spares_down_and_the_next_starts_them(scheduled,
                                                                         django_capture_on_commit_callbacks):
    scheduled.min_spares = 2
    scheduled.save()
    rule(scheduled, SAT | SUN, "00:00", "00:00", 2, powered_on=False, name="Weekend")
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Fri 12:00"))
    provisioned(scheduled)

    with django_capture_on_commit_callbacks() as sent:
        done = reconcile_pool(pool_id=scheduled.pk, now=at("Sat 00:00"))
    assert (done["powered_off"], done["removed_surplus"], done["created"]) == (2, 0, 0)
    assert spares(scheduled, S.STOPPING) == 2 and sent_tasks(sent) == ["stop_desktop_task"] * 2
    finished(scheduled)
    assert spares(scheduled, S.STOPPED) == 2
    assert reconcile_pool(pool_id=scheduled.pk, now=at("Sun 23:59"))["powered_off"] == 0

    with django_capture_on_commit_callbacks() as sent:
        done = reconcile_pool(pool_id=scheduled.pk, now=at("Mon 00:00").replace(day=10))
    assert done["powered_on"] == 2 and spares(scheduled, S.STARTING) == 2
    assert sent_tasks(sent) == ["start_desktop_task"] * 2


def test_powering_on_respects_the_hosts_parallel_limit(scheduled, host, django_capture_on_commit_callbacks):
    rule(scheduled, SAT, "00:00", "00:00", 4, powered_on=False)
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Sat 09:00"))
        provisioned(scheduled)
        for desktop in Desktop.objects.filter(pool=scheduled, state=S.RUNNING):
            desktop.transition(S.STOPPED)
    host.max_parallel_provisioning = 3
    host.save()
    with django_capture_on_commit_callbacks():
        assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00").replace(day=10))["powered_on"] == 3


def test_a_boundary_is_written_down_once_for_the_admins(scheduled, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 07:59"))
        assert not BrokerEvent.objects.filter(pool=scheduled).exists()
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00:30"))
    events = list(BrokerEvent.objects.filter(pool=scheduled).values_list("message", flat=True))
    assert events == ["capacity schedule: 4 spares, powered on (schedule rule “Morning rush”); was 1 spare, "
                      "powered on; until Mon 10:00, then 1 spare, powered on"]
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 10:00"))
    assert BrokerEvent.objects.filter(pool=scheduled).first().message.startswith(
        "capacity schedule: 1 spare, powered on (the pool's own settings); was 4 spares, powered on")
    assert BrokerEvent.objects.filter(pool=scheduled).count() == 2


def test_deleting_the_rule_in_force_gives_the_pool_its_own_settings_back(scheduled,
                                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))
        provisioned(scheduled)
        assert Pool.objects.get(pk=scheduled.pk).schedule_rule_in_force.name == "Morning rush"
        PoolScheduleRule.objects.filter(pool=scheduled).delete()
        assert Pool.objects.get(pk=scheduled.pk).schedule_rule_in_force is None
        assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:01"))["removed_surplus"] == 3


@pytest.mark.libvirt
def test_a_spare_built_in_a_powered_off_window_is_kept_off(scheduled, host, django_capture_on_commit_callbacks):
    """On the real libvirtd: cloned and defined, not started."""
    from broker.hypervisor import driver_for_uri
    from broker.services.provisioning import delete_desktop, provision_desktop

    rule(scheduled, SAT, "00:00", "00:00", 1, powered_on=False)
    with django_capture_on_commit_callbacks():
        reconcile_pool(pool_id=scheduled.pk, now=at("Sat 09:00"))
    spare = Desktop.objects.get(pool=scheduled)
    try:
        assert provision_desktop(desktop_id=spare.pk, now=at("Sat 09:00")).state == S.STOPPED
        assert driver_for_uri(host.libvirt_uri).domain_info(spare.name).state == "shutoff"
    finally:
        delete_desktop(desktop_id=spare.pk)


@pytest.mark.libvirt
def test_real_spares_come_and_go_across_a_boundary(scheduled, host, django_capture_on_commit_callbacks):
    """Real domains on libvirtd: none before the morning rush, three more at 08:00, gone at 10:00.
    The workers' steps run here, in order, at the injected time (a worker would use the clock)."""
    from broker.hypervisor import DomainNotFound, driver_for_uri
    from broker.services.provisioning import delete_desktop, provision_desktop

    driver = driver_for_uri(host.libvirt_uri)
    PoolScheduleRule.objects.filter(pool=scheduled).update(spares_powered_on=False, min_spares=3)
    Pool.objects.filter(pk=scheduled.pk).update(min_spares=0)

    def domains():
        names = Desktop.objects.filter(pool=scheduled).values_list("name", flat=True)
        found = []
        for name in names:
            try:
                found.append(driver.domain_info(name).state)
            except DomainNotFound:
                pass
        return found

    def run_workers(now):
        for desktop in Desktop.objects.filter(pool=scheduled, state=S.QUEUED):
            provision_desktop(desktop_id=desktop.pk, now=now)
        for desktop in Desktop.objects.filter(pool=scheduled, state=S.DELETING):
            delete_desktop(desktop_id=desktop.pk)

    try:
        with django_capture_on_commit_callbacks():
            assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 07:59"))["created"] == 0
            assert domains() == []
            assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 08:00"))["created"] == 3
            run_workers(at("Mon 08:00"))
            assert domains() == ["shutoff"] * 3
            assert reconcile_pool(pool_id=scheduled.pk, now=at("Mon 10:00"))["removed_surplus"] == 3
            run_workers(at("Mon 10:00"))
            assert domains() == []
            assert spares(scheduled) == 0
    finally:
        for desktop in Desktop.objects.filter(pool=scheduled).exclude(state=S.DELETED):
            delete_desktop(desktop_id=desktop.pk)


# --- the admin -----------------------------------------------------------------------------------

@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    verified_session(client, django_user_model.objects.create_superuser("root", password="admin-pass-1"))
    return client


def test_the_pool_pages_show_the_capacity_now_and_the_next_change(admin_client_logged_in, scheduled):
    # Every day, so that the next change is the same whenever the test runs: 4 → 1 at 10:00.
    PoolScheduleRule.objects.filter(pool=scheduled).update(weekdays=ALL_WEEKDAYS, start_time=time(0),
                                                           end_time=time(10))
    expected = pool_capacity(pool=scheduled)  # the admin asks the same selector with the clock
    assert expected.next is not None
    assert expected.describe().startswith(("4 spares, powered on — until ", "1 spare, powered on — until "))
    page = admin_client_logged_in.get(reverse("admin:broker_pool_change", args=[scheduled.pk])).content.decode()
    assert expected.describe() in page
    assert "Capacity schedule (times in UTC" in page
    listing = admin_client_logged_in.get(reverse("admin:broker_pool_changelist")).content.decode()
    now, then = expected.current.short_label, expected.next.short_label  # e.g. "4 on", "1 on"
    assert f"0 / {now}<br>" in listing and f"→ {then} {expected.next_at_label}</span>" in listing
    assert "broker/admin/schedules.css" in listing  # the heading of that column wraps


def post_rules(client, pool, rules):
    from django.forms.models import model_to_dict

    data = {k: ("on" if v is True else v) for k, v in model_to_dict(pool).items()
            if v is not None and v is not False and v != ""}
    data["isolate_desktops"] = str(pool.isolate_desktops)  # a choice of Yes / No / by kind, not a checkbox
    data.update({"entitlements-TOTAL_FORMS": "0", "entitlements-INITIAL_FORMS": "0",
                 "schedule_rules-TOTAL_FORMS": str(len(rules)), "schedule_rules-INITIAL_FORMS": "0",
                 "networks-TOTAL_FORMS": "0", "networks-INITIAL_FORMS": "0"})
    for n, (days, start, end, count, name, *powered_on) in enumerate(rules):
        data.update({f"schedule_rules-{n}-name": name, f"schedule_rules-{n}-weekdays": [str(d) for d in days],
                     f"schedule_rules-{n}-start_time": start, f"schedule_rules-{n}-end_time": end,
                     f"schedule_rules-{n}-min_spares": count})
        if powered_on != [False]:  # an unticked checkbox is not sent at all
            data[f"schedule_rules-{n}-spares_powered_on"] = "on"
    return client.post(reverse("admin:broker_pool_change", args=[pool.pk]), data)


def test_the_admin_adds_rules_inline(admin_client_logged_in, floating):
    """The README's example: windows that end where the next begins do not overlap."""
    Pool.objects.filter(pk=floating.pk).update(max_desktops=25)
    floating.refresh_from_db()
    weekdays = [MON, TUE, WED, THU, FRI]
    response = post_rules(admin_client_logged_in, floating, [
        (weekdays, "06:00", "08:00", 5, "Early"),
        (weekdays, "08:00", "10:00", 20, "Morning rush"),
        (weekdays, "10:00", "20:00", 5, "Day"),
        ([SAT, SUN], "00:00", "00:00", 0, "Weekend", False),
    ])
    assert response.status_code == 302, (response.context["adminform"].form.errors,
                                         [(f.formset.prefix, f.formset.errors, f.formset.non_form_errors())
                                          for f in response.context["inline_admin_formsets"]])
    weekend, early, rush, day = PoolScheduleRule.objects.filter(pool=floating).order_by("start_time", "pk")
    assert (rush.weekdays, rush.min_spares, rush.name, rush.spares_powered_on) == (WEEKDAYS, 20, "Morning rush", True)
    assert (weekend.weekdays, weekend.start_time, weekend.end_time) == (SAT | SUN, time(0), time(0))
    assert wanted(floating, "Fri 19:59") == (5, True) and wanted(floating, "Sat 12:00") == (0, False)


def test_the_admin_refuses_overlapping_rules_and_says_where(admin_client_logged_in, floating):
    response = post_rules(admin_client_logged_in, floating, [
        ([MON, TUE, WED, THU, FRI], "07:00", "19:00", 2, "Day"),
        ([TUE], "18:00", "08:00", 1, "Late"),
    ])
    assert response.status_code == 200
    assert "“Day” (Mon–Fri 07:00–19:00) and “Late” (Tue 18:00–08:00) overlap from Tue 18:00." in \
        response.content.decode()
    assert not PoolScheduleRule.objects.exists()
    # Tuesday's night window runs into Wednesday morning: it overlaps Wednesday's day too.
    response = post_rules(admin_client_logged_in, floating, [
        ([WED], "07:00", "19:00", 2, "Day"), ([TUE], "20:00", "08:00", 1, "Late")])
    assert "overlap from Wed 07:00" in response.content.decode()


def test_the_admin_explains_a_rule_it_refuses(admin_client_logged_in, floating):
    response = post_rules(admin_client_logged_in, floating, [([], "08:00", "08:00", 9, "Bad")])
    page = response.content.decode()
    assert response.status_code == 200
    assert "Pick at least one weekday." in page
    assert "9 spares is more than the pool&#x27;s maximum size (3 desktops)." in page
