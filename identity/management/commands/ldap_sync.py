from django.core.management.base import BaseCommand, CommandError

from identity.models import DirectorySyncRun
from identity.services import sync

Status = DirectorySyncRun.Status


class Command(BaseCommand):
    help = ("Sync users and group memberships from the LDAP directory now (what the periodic job does). "
            "Exit status: 0 done, 1 failed (nothing changed), 2 done but removals held back.")

    def add_arguments(self, parser):
        parser.add_argument("--allow-mass-removal", action="store_true",
                            help="apply deactivations and membership removals however many there are "
                                 "(after checking that the directory is right)")

    def handle(self, *args, allow_mass_removal=False, **options):
        run = sync.queue_sync(trigger=DirectorySyncRun.Trigger.COMMAND, allow_mass_removal=allow_mass_removal)
        run = sync.run_directory_sync(run_id=run.pk)
        seconds = run.duration.total_seconds() if run.duration else 0.0
        self.stdout.write(f"directory sync #{run.pk} in {seconds:.1f} s: {sync.summary(run)}")
        for error in run.errors:
            self.stderr.write(f"  {error}")
        if run.status in (Status.FAILED, Status.SKIPPED):
            raise CommandError(f"directory sync #{run.pk} {run.get_status_display().lower()}", returncode=1)
        if run.status == Status.HELD:
            raise CommandError(f"directory sync #{run.pk} held back removals; see above", returncode=2)
