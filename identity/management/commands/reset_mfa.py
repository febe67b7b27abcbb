from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from identity.mfa import enrolment


class Command(BaseCommand):
    help = ("Remove every second factor of a user (break-glass: a lost phone or key). The user logs in with "
            "the password and, if staff, is sent to enrol again.")

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        removed = enrolment.remove_all_devices(user=user, reason="manage.py reset_mfa")
        self.stdout.write(f"removed {removed} second factor(s) of {username}")
