from django.core.management.base import BaseCommand, CommandError

from identity import selectors
from identity.models import LoginLockout
from identity.services import throttling


class Command(BaseCommand):
    help = "Clear login lockouts (break-glass, when the admin pages themselves are locked out)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--account", help="user name")
        which.add_argument("--address", help="client IP address")
        which.add_argument("--all", action="store_true", help="every lockout in force")

    def handle(self, *args, account=None, address=None, all=False, **options):
        lockouts = selectors.active_lockouts()
        if account:
            lockouts = lockouts.filter(scope=LoginLockout.Scope.ACCOUNT, key=throttling.account_key(account))
        elif address:
            lockouts = lockouts.filter(scope=LoginLockout.Scope.ADDRESS, key=address)
        cleared = sum(throttling.clear_lockout(lockout=lockout, actor=None) for lockout in lockouts)
        if not cleared and not all:
            raise CommandError("no lockout in force matches")
        self.stdout.write(f"cleared {cleared} lockout(s)")
