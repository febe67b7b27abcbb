"""The periodic task on the real stack: a Celery worker (as beat would send it) finds the
dashboard's tasks, stores a sample that names the workers that answered, and reads the real
host through libvirt on the host's queue."""

import os
import time

import pytest

pytestmark = [pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_the_worker_takes_a_sample_and_reads_each_host(live_stack, host):
    from broker.enqueue import enqueue_after_commit
    from dashboard.models import HostReading, Sample

    enqueue_after_commit("dashboard.tasks.take_dashboard_sample_task")
    deadline = time.monotonic() + 90
    while not (Sample.objects.exists() and HostReading.objects.filter(host=host).exists()):
        assert time.monotonic() < deadline, f"no sample or reading after 90 s; see {live_stack.log_dir}"
        time.sleep(0.5)
    sample = Sample.objects.get()
    assert sample.workers_alive >= 1
    assert any(name.startswith(f"test-{live_stack.port}@") for name in sample.worker_names)
    reading = HostReading.objects.get(host=host)
    assert reading.error == "" and reading.memory_total_kib > 0 and reading.cpu_total_ns > 0
