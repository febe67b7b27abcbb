"""/metrics: Prometheus text that prometheus-client's own parser reads, with the site's figures;
only for allowed addresses or the bearer token."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from broker.models import ConsoleSession, Desktop, DesktopEvent, DesktopState, LiveMigration

S = DesktopState


def scrape(client, **headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_desktops_consoles_hosts_and_migrations(client, site):
    a, b = site
    Desktop.objects.filter(pk=b.spare.pk).update(state=S.FAILED)
    b.spare.note("x")
    DesktopEvent.objects.create(desktop=b.spare, from_state=S.STOPPED, to_state=S.FAILED, message="clone failed")
    # a desktop that ran 42 s after it was made
    made = timezone.now() - timedelta(minutes=5)
    Desktop.objects.filter(pk=a.desktop.pk).update(created_at=made)
    DesktopEvent.objects.filter(pk=DesktopEvent.objects.create(desktop=a.desktop, from_state=S.STARTING,
                                                               to_state=S.RUNNING).pk).update(
        created_at=made + timedelta(seconds=42))
    ConsoleSession.objects.create(user=a.desktop.user, desktop=a.desktop, protocol="vnc", bytes_to_client=500,
                                  closed_at=timezone.now())
    LiveMigration.objects.create(desktop=b.desktop, source=b.host, destination=a.host, reason="admin",
                                 state="completed", started_at=timezone.now() - timedelta(seconds=7),
                                 finished_at=timezone.now())

    samples = scrape(client)  # the test client comes from 127.0.0.1
    assert value(samples, "vdi_desktops", pool="pool-a", state="running") == 1
    assert value(samples, "vdi_desktops", pool="pool-a", state="stopped") == 1
    assert value(samples, "vdi_desktops", pool="pool-b", state="failed") == 1
    assert value(samples, "vdi_desktop_failures_total", pool="pool-b") == 1
    assert value(samples, "vdi_consoles_open", pool="pool-a", protocol="vnc") == 1
    assert value(samples, "vdi_consoles_open_bytes", direction="to_client") == 2 * 1001
    assert value(samples, "vdi_console_bytes_total", direction="to_client") == 2 * 1001 + 500
    assert value(samples, "vdi_console_sessions_total") == 3
    assert value(samples, "vdi_host_up", host="hv-a", kind="hypervisor") == 1
    assert value(samples, "vdi_host_cpus", host="hv-a") == 8
    assert value(samples, "vdi_host_vcpus_allowed", host="hv-a") == 8 * 2.5
    assert value(samples, "vdi_host_placed_vcpus", host="hv-a") == 1  # the running one; the stopped is not placed
    assert value(samples, "vdi_host_placed_memory_mib", host="hv-b") == 256
    assert value(samples, "vdi_live_migrations", state="failed") == 2
    assert value(samples, "vdi_live_migrations", state="completed") == 1
    assert value(samples, "vdi_live_migration_seconds", quantile="0.5") == pytest.approx(7, abs=0.5)
    assert value(samples, "vdi_provisioning_seconds", quantile="0.5") == pytest.approx(42, abs=0.5)
    assert value(samples, "vdi_provisioning_seconds_observations") == 1


def test_metrics_refuse_other_addresses_and_accept_the_token(client, site):
    with override_settings(VDI_METRICS_ALLOW=["10.9.0.0/16"], VDI_METRICS_TOKEN="s3cret-token"):
        assert client.get("/metrics").status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token")
        assert client.get("/metrics", REMOTE_ADDR="10.9.3.4").status_code == 200
    with override_settings(VDI_METRICS_ALLOW=[], VDI_METRICS_TOKEN=""):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_healthz_answers_without_the_database(client):
    response = client.get("/healthz")  # no db fixture: a query would fail the test
    assert response.status_code == 200 and response.content == b"ok\n"
