"""Admin fields an operator types (libvirt URIs, directories, image paths, naming patterns with
{} fields, capacities), through the admin's own forms: any text gets a form error or a value
libvirt may be given as it is; never an exception (a 500) and never a libvirt call with a
value nobody checked."""

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib import admin as django_admin
from django.test import RequestFactory
from django.urls import reverse
from hypothesis import example, given
from hypothesis import strategies as st

from broker.models import GoldenImageVersion, Host, Pool
from tests.hostile.support import hostile
from tests.support.mfa import verified_session

pytestmark = pytest.mark.django_db

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", password="admin-pass-1")


def admin_form(model, user, **initial):
    request = RequestFactory().get("/admin/")
    request.user = user
    return django_admin.site._registry[model].get_form(request, obj=None)


def text_from(pieces, alphabet):
    return st.lists(st.one_of(st.sampled_from(pieces), st.text(alphabet, max_size=4)), max_size=6).map("".join)


uris = text_from(["qemu", "qemu+ssh", "qemu+ext", "qemu+tls", "test", "://", ":///", "/system", "?", "&",
                  "command=/bin/sh", "socket=/run/x", "netcat=nc", "host", ":22", ":x", "@", " ", "\n", "%00",
                  "[::1]", "#frag", "default"], "abc/:?=+&@%.[] \t\x00é")


def host_data(**fields):
    data = {"name": "h1", "kind": "hypervisor", "libvirt_uri": "qemu:///system", "domain_type": "qemu",
            "console_address": "127.0.0.1", "storage_pool": "vdi", "storage_path": "/var/lib/vdi/desktops",
            "image_pool": "vdi-images", "image_path": "/var/lib/vdi/images", "serial_log_dir": "",
            "vcpu_overcommit": "2.5", "memory_overcommit": "1.2", "max_parallel_provisioning": "4",
            "is_enabled": "on"}
    data.update(fields)
    return data


@hostile(max_examples=150)
@given(uri=uris)
@example(uri="qemu+ext:///system?command=/tmp/evil")
@example(uri="qemu+ssh://root@host/system?command=/tmp/evil")
@example(uri="qemu:///system?netcat=/tmp/evil")
@example(uri="qemu+tcp://host:port/system")
@example(uri="qemu:///system\n")
def test_a_libvirt_uri_is_checked_before_any_connection(superuser, uri):
    form = admin_form(Host, superuser)(data=host_data(libvirt_uri=uri))
    if not form.is_valid():
        return
    saved = form.cleaned_data["libvirt_uri"]
    parts = urlsplit(saved)
    # What libvirt would act on: a known driver and transport, no program to run, printable.
    assert parts.scheme in {"qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tls", "qemu+tcp",
                            "qemu+unix", "test"}, saved
    assert not {key for key, _ in parse_qsl(parts.query)} & {"command", "netcat"}, saved
    assert saved.isprintable() and " " not in saved, saved


paths = text_from(["/", "..", ".", "//", "var", "lib", "vdi", "images", "a.qcow2", "\n", "\\", " ", "~"],
                  "ab/.\x01\t é")


@hostile(max_examples=120)
@given(storage_path=paths, image_path=paths, serial_log_dir=paths,
       console_address=text_from(["127.0.0.1", "[::1]", "host.example", ":", " ", ";", "/", "\n"], "a1.:-[]"),
       storage_pool=text_from(["vdi", "-", ".", "/", " ", "<", "'"], "ab_"))
@example(storage_path="/var/lib/../../etc", image_path="relative/dir", serial_log_dir="/var/log\n/x",
         console_address="127.0.0.1; rm -rf /", storage_pool="</name><x>")
def test_host_directories_addresses_and_pool_names_are_plain(superuser, storage_path, image_path, serial_log_dir,
                                                             console_address, storage_pool):
    form = admin_form(Host, superuser)(data=host_data(
        storage_path=storage_path, image_path=image_path, serial_log_dir=serial_log_dir,
        console_address=console_address, storage_pool=storage_pool))
    if not form.is_valid():
        return
    data = form.cleaned_data
    for field in ("storage_path", "image_path", "serial_log_dir"):
        path = data[field]
        if field == "serial_log_dir" and not path:
            continue
        assert path.startswith("/") and ".." not in path.split("/") and "//" not in path and path.isprintable()
    assert re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", data["console_address"])
    assert SAFE_NAME.fullmatch(data["storage_pool"])


patterns = text_from(["{pool}", "{n}", "{n:04d}", "{n:>40}", "{n:0100d}", "{pool:.3}", "{", "}", "{{", "}}",
                      "{pool.__class__}", "{n.real}", "{n[0]}", "{pool!r}", "{0}", "{}", "{x}", "/", "..", " ",
                      "-", "_", "é", "{n:s}", "{pool:d}"], "abc-_./{}:0")


@hostile(max_examples=200)
@given(pattern=patterns)
@example(pattern="{pool.nothing}-{n}")  # an AttributeError (the admin's 500) before the fix
@example(pattern="{n[0]}")  # a TypeError (a 500) before the fix
@example(pattern="{pool.__class__.__name__}-{n}")  # was accepted: attribute lookups in a name
@example(pattern="../../etc/{pool}-{n}")  # was accepted: a volume name with slashes
@example(pattern="{pool}")  # was accepted: every desktop the same name
def test_a_naming_pattern_gives_only_safe_unique_names(superuser, image, pattern):
    form = admin_form(Pool, superuser)(data={
        "name": "desk", "display_name": "Desk", "kind": "dedicated", "image": image.pk, "vcpus": "1",
        "memory_mib": "256", "protocol": "vnc", "linked_clones": "on", "data_disk_gib": "1",
        "naming_pattern": pattern, "min_spares": "0", "max_desktops": "10", "spares_powered_on": "on",
        "backup_every_hours": "24", "backup_keep": "7", "filter_traffic": "on", "farm_offers_desktop": "on",
        "max_sessions_per_host": "50", "max_concurrent_logons_per_host": "2", "session_geometry": "1280x800",
        "disconnect_timeout_minutes": "30", "isolate_desktops": ""})
    if not form.is_valid():
        assert "naming_pattern" in form.errors or form.errors, form.errors
        return
    from django.conf import settings

    names = {settings.VDI_NAME_PREFIX + pattern.format(pool="desk", n=n) for n in (1, 2, 999, 10**6)}
    assert len(names) == 4, "a pattern must tell desktops apart"
    for name in names:
        assert SAFE_NAME.fullmatch(name) and len(name) <= 100, name


numbers = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(repr),
                    st.sampled_from(["", " ", "1e3", "0x10", "1_000", "٣", "nan", "inf", "-0", "9" * 30]))


@hostile(max_examples=150)
@given(vcpus=numbers, memory=numbers, spares=numbers, maximum=numbers, disk=numbers, idle=numbers)
def test_pool_capacities_are_numbers_in_range(superuser, image, vcpus, memory, spares, maximum, disk, idle):
    form = admin_form(Pool, superuser)(data={
        "name": "desk", "display_name": "Desk", "kind": "floating", "image": image.pk, "vcpus": vcpus,
        "memory_mib": memory, "protocol": "vnc", "data_disk_gib": disk, "naming_pattern": "{pool}-{n:04d}",
        "min_spares": spares, "max_desktops": maximum, "backup_every_hours": "24", "backup_keep": "7",
        "max_sessions_per_host": "50", "max_concurrent_logons_per_host": "2", "session_geometry": "1280x800",
        "console_idle_timeout_minutes": idle})
    if not form.is_valid():
        return
    data = form.cleaned_data
    assert 1 <= data["vcpus"] <= 32767 and 64 <= data["memory_mib"] <= 2**31 - 1
    assert 0 <= data["min_spares"] <= data["max_desktops"] <= 2**31 - 1 and 0 <= data["data_disk_gib"]
    idle_minutes = data["console_idle_timeout_minutes"]
    assert idle_minutes is None or (idle_minutes == idle_minutes and abs(idle_minutes) != float("inf"))


@pytest.fixture
def test_driver_host(db):
    return Host.objects.create(name="testdriver", libvirt_uri="test:///default", domain_type="qemu")


@hostile(max_examples=60)
@given(path=paths)
@example(path="/var/lib/vdi/images/../../../etc/shadow")
@example(path="images/demo.qcow2")
def test_an_image_path_reaches_libvirt_only_when_it_is_a_plain_absolute_path(superuser, image, test_driver_host,
                                                                              path):
    form = admin_form(GoldenImageVersion, superuser)(data={"image": image.pk, "path": path,
                                                           "check_on_host": test_driver_host.pk})
    assert not form.is_valid()  # nothing is in the test driver's pools: every path is refused
    message = " ".join(form.errors.get("__all__", []))
    plain = path.startswith("/") and ".." not in path.split("/") and "//" not in path and path.isprintable() \
        and not path.endswith("/")
    if not plain and "path" not in form.errors:
        assert "is not an absolute path of an image file" in message, message  # refused before libvirt


def test_the_admin_page_answers_a_bad_pattern_with_a_form_error(client, superuser, image):
    verified_session(client, superuser)
    response = client.post(reverse("admin:broker_pool_add"), {
        "name": "desk", "display_name": "Desk", "kind": "dedicated", "image": image.pk, "vcpus": "1",
        "memory_mib": "256", "protocol": "vnc", "naming_pattern": "{pool.nothing}-{n}",
        "min_spares": "0", "max_desktops": "10", "data_disk_gib": "0", "backup_every_hours": "24",
        "backup_keep": "7", "max_sessions_per_host": "50", "max_concurrent_logons_per_host": "2",
        "session_geometry": "1280x800",
        **{f"{prefix}-{k}": v for prefix in ("entitlements", "schedule_rules", "networks", "applications")
           for k, v in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"))}})
    assert response.status_code == 200
    assert "Use {pool} and {n} only" in response.content.decode()
    assert not Pool.objects.filter(name="desk").exists()


geometries = st.one_of(st.text(st.characters(whitelist_categories=("Nd",)) | st.sampled_from("x0123456789 "),
                               max_size=10),
                       st.sampled_from(["1280x800", "١٢٨٠x٨٠٠", "1280x800 ", "99999x99999", "1280X800", "x", "0x0"]))


@hostile(max_examples=60)
@given(geometry=geometries)
@example(geometry="١٢٨٠x٨٠٠")  # Arabic-Indic digits: accepted before the fix, then given to Xvnc -geometry
def test_a_farms_session_geometry_is_ascii_width_by_height(superuser, geometry):
    form = admin_form(Pool, superuser)(data={
        "name": "farm", "display_name": "Farm", "kind": "farm", "vcpus": "1", "memory_mib": "256",
        "protocol": "vnc", "data_disk_gib": "0", "naming_pattern": "{pool}-{n:04d}", "min_spares": "0",
        "max_desktops": "10", "backup_every_hours": "24", "backup_keep": "7", "max_sessions_per_host": "50",
        "max_concurrent_logons_per_host": "2", "session_geometry": geometry, "farm_offers_desktop": "on"})
    if form.is_valid():
        assert re.fullmatch(r"[0-9]{3,4}x[0-9]{3,4}", form.cleaned_data["session_geometry"]), geometry


admin_parameters = ["q", "o", "p", "e", "all", "_changelist_filters", "state__exact", "kind__exact", "pool__id__exact",
                    "is_enabled__exact", "created_at__gte", "id__in", "user__password__startswith", "host", "pool",
                    "desktop__user__username", "state", "protocol__exact", "farm__id__exact"]
admin_values = st.one_of(st.text(max_size=10), st.sampled_from(["", "-1", "9" * 30, "1,2", "x", "0.-1", "%00",
                                                                 "2026-13-45", "__", "1.2.3"]))


@hostile(max_examples=120)
@given(index=st.integers(0, 10**6), query=st.lists(st.tuples(st.sampled_from(admin_parameters), admin_values),
                                                  max_size=3))
@example(index=0, query=[("o", "9.-9.x")])
@example(index=0, query=[("user__password__startswith", "pbkdf2")])
def test_no_query_string_breaks_an_admin_list(client, superuser, index, query):
    """Every model the admin registers: its list page with any search, ordering, filter and page."""
    models = sorted(django_admin.site._registry, key=lambda model: model._meta.label)
    model = models[index % len(models)]
    verified_session(client, superuser)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    response = client.get(url, query)
    assert response.status_code in (200, 302, 400, 403, 404), (model._meta.label, query, response.status_code)
