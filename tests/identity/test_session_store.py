"""identity/session_store.py: Django's database sessions with fewer trips, and the same rules."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.db import connection
from django.utils import timezone

from identity.session_store import SessionStore

pytestmark = pytest.mark.django_db


def test_a_stored_session_reads_back_and_an_expired_or_unknown_one_does_not():
    store = SessionStore()
    store["colour"] = "teal"
    store.create()
    key = store.session_key

    with CaptureQueriesContext(connection) as queries:
        assert SessionStore(key).load() == {"colour": "teal"}
    assert len(queries) == 1

    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = SessionStore(key)
    assert expired.load() == {}
    assert expired.session_key is None  # as Django's: a dead key is dropped, never reused

    unknown = SessionStore("x" * 32)
    assert unknown.load() == {} and unknown.session_key is None


def test_login_stores_one_session_row_under_a_new_key(django_user_model):
    django_user_model.objects.create_user("sam", password="correct-horse-9")
    client = Client()
    client.get("/login/")
    assert client.post("/login/", {"username": "sam", "password": "correct-horse-9"}).status_code == 302
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert Session.objects.filter(session_key=key).count() == 1
    assert client.get("/").status_code == 200  # the row read back logs the user in
    client.post("/logout/")
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get("/").status_code == 302
