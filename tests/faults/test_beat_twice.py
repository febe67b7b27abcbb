"""Fault: celery beat started twice by mistake (two hosts both run it, or an old one was not
stopped). Every periodic pass then comes twice, at nearly the same moment, and each finished
clone asks for a pass of its own too. The pool must still never hold more desktops than its
maximum, and no desktop may be built twice."""

import subprocess
import threading
import time

import pytest

from broker.hypervisor import driver_for_uri
from broker.models import Desktop, DesktopState, Pool
from broker.services.pools import reconcile_pool
from tests.support.stack import BIN, ROOT
from tests.support.threads import closing_connection
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
S = DesktopState


@pytest.fixture
def two_beats(live_stack, tmp_path):
    """Two `celery beat` processes against the live stack's worker, a pass every second each."""
    env = {**live_stack.env(), "VDI_RECONCILE_SECONDS": "1"}
    beats = [subprocess.Popen([str(BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO",
                               "-s", str(tmp_path / f"schedule-{n}"), "--pidfile", ""],
                              cwd=ROOT, env=env, stdout=open(tmp_path / f"beat-{n}.log", "w"),
                              stderr=subprocess.STDOUT)
             for n in (1, 2)]
    yield beats
    for beat in beats:
        beat.terminate()
    for beat in beats:
        beat.wait(timeout=20)


def test_two_beats_never_overshoot_a_pool_nor_build_a_desktop_twice(live_stack, host, image, two_beats, tmp_path):
    # It wants five spares but may hold three: every pass would like to add more.
    pool = Pool.objects.create(name="beat", display_name="Twice", image=image, kind=Pool.Kind.FLOATING,
                               min_spares=5, max_desktops=3, spares_powered_on=False)
    # And the admin's "reconcile now" pressed at the same moment, in four threads of our own.
    threads = [threading.Thread(target=closing_connection(lambda: reconcile_pool(pool_id=pool.pk)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    wait_until(lambda: Desktop.objects.filter(pool=pool, state=S.STOPPED).count() == 3, timeout=60,
               what="three spares ready")
    # Several more double passes over the full pool (the beats take a few seconds to start).
    def passes_sent(n):
        return (tmp_path / f"beat-{n}.log").read_text().count("Sending due task reconcile-everything")

    wait_until(lambda: min(passes_sent(1), passes_sent(2)) >= 4, timeout=40, what="four passes from each beat")
    time.sleep(2)  # the last ones run

    desktops = list(Desktop.objects.filter(pool=pool))
    assert len(desktops) == 3, [(d.name, d.state) for d in desktops]
    for desktop in desktops:
        assert desktop.state == S.STOPPED
        steps = list(desktop.events.order_by("created_at", "id").values_list("to_state", flat=True))
        assert steps.count(S.CLONING) == 1 and steps.count(S.STOPPED) == 1, (desktop.name, steps)
        assert desktop.provisioning_attempts == 1
    driver = driver_for_uri("qemu:///system")
    prefix = desktops[0].name.rsplit("-", 1)[0]
    assert sorted(d.name for d in driver.list_domains() if d.name.startswith(prefix)) == sorted(
        d.name for d in desktops)
    assert sorted(v for v in driver.list_volume_names(pool=host.storage_pool) if v.startswith(prefix)) == sorted(
        d.volume_name for d in desktops)
    assert all(beat.poll() is None for beat in two_beats)  # both ran all along
