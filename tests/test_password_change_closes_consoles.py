"""A changed password ends the user's logins (Django's session auth hash), and their consoles."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

from tests.test_access_revocation import console_closed_by, logged_in_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def desktop(echo_desktop):
    return echo_desktop


def test_changing_the_password_closes_the_users_consoles(live_stack, desktop, employee, echo_server):
    def change_password():
        employee.set_password("a-new-Password-7")
        employee.save()

    client = logged_in_client(employee)
    code, reason = console_closed_by(live_stack, desktop, employee, client, change_password, echo_server)
    assert (code, reason) == (4401, "Your password was changed. Log in again.")


def test_a_password_changed_without_a_message_closes_the_console_at_the_recheck(live_stack, desktop, employee,
                                                                                 echo_server):
    """The periodic re-check (2 s in tests) checks the login as Django does, auth hash included."""
    def change_password_quietly():  # no signal, no message: only the re-check can notice
        get_user_model().objects.filter(pk=employee.pk).update(password=make_password("a-new-Password-7"))

    client = logged_in_client(employee)
    code, reason = console_closed_by(live_stack, desktop, employee, client, change_password_quietly, echo_server)
    assert (code, reason) == (4401, "Your login session has ended. Log in again.")
